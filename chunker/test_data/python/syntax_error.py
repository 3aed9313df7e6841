import os


def ok(path):
    return os.path.exists(path)


def broken(x):
    return x +


class StillFound:
    def method(self):
        return 1


def after():
    pass
