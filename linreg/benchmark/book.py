"""The book's plain-PyTorch program, as the baseline for whole-process timings.

Run as a script (``python linreg/benchmark/book.py``), it imports nothing but torch: Dive into Deep
Learning's "concise implementation of linear regression", with d2l's ``synthetic_data`` written out.
"""

import torch
from torch import nn
from torch.utils import data


def synthetic_data(w, b, num_examples):  # d2l.synthetic_data
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def load_array(data_arrays, batch_size, is_train=True):  # d2l.load_array
    dataset = data.TensorDataset(*data_arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)


def main() -> None:
    true_w = torch.tensor([2, -3.4, 5.6, 3.2, -0.6])
    true_b = 4.2
    features, labels = synthetic_data(true_w, true_b, 1000)
    data_iter = load_array((features, labels), 10)
    net = nn.Sequential(nn.Linear(5, 1))
    net[0].weight.data.normal_(0, 0.01)
    net[0].bias.data.fill_(0)
    loss = nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=0.03)
    for epoch in range(3):
        for X, y in data_iter:
            batch_loss = loss(net(X), y)
            trainer.zero_grad()
            batch_loss.backward()
            trainer.step()
        print(f"epoch {epoch + 1}, loss {loss(net(features), labels):f}")
    print("error in estimating w:", true_w - net[0].weight.data.reshape(true_w.shape))
    print("error in estimating b:", true_b - net[0].bias.data)


if __name__ == "__main__":
    main()
