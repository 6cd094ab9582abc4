"""Map-reduce word count over text chunks, with ray.wait to consume results as they finish."""

import collections

import mpiray as ray

TEXT = ("the quick brown fox jumps over the lazy dog " * 2000).split()


@ray.remote
def count(words: list) -> collections.Counter:
    return collections.Counter(words)


@ray.remote
def merge(*counters: collections.Counter) -> collections.Counter:
    total = collections.Counter()
    for c in counters:
        total.update(c)
    return total


def main() -> None:
    ray.init()
    chunks = [TEXT[i:i + 1000] for i in range(0, len(TEXT), 1000)]
    pending = [count.remote(c) for c in chunks]
    partials = []
    while pending:  # reduce in pairs as maps finish
        ready, pending = ray.wait(pending, num_returns=min(2, len(pending)))
        partials.append(merge.remote(*ready))
    total = ray.get(merge.remote(*partials))
    print("the:", total["the"], "fox:", total["fox"], "words:", sum(total.values()))
    assert total["the"] == 4000 and sum(total.values()) == len(TEXT)
    ray.shutdown()


if __name__ == "__main__":
    main()
