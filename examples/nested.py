"""Nested tasks: a recursive fan-out deeper than the number of CPUs does not deadlock,
because a task blocked in get() gives its CPU back while it waits."""

import mpiray as ray


@ray.remote
def fib(n: int) -> int:
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))


@ray.remote
def quicksort(xs: list) -> list:
    if len(xs) <= 64:
        return sorted(xs)
    pivot = xs[len(xs) // 2]
    left = quicksort.remote([x for x in xs if x < pivot])
    right = quicksort.remote([x for x in xs if x > pivot])
    return ray.get(left) + [x for x in xs if x == pivot] + ray.get(right)


def main() -> None:
    ray.init(num_cpus=2)
    print("fib(8) =", ray.get(fib.remote(8)))
    import random

    data = [random.randrange(10_000) for _ in range(2_000)]
    assert ray.get(quicksort.remote(data)) == sorted(data)
    print("quicksort of", len(data), "numbers: ok")
    ray.shutdown()


if __name__ == "__main__":
    main()
