"""A load generator for the server (used by tests/test_serve.py and bench/serve.py):

    results, seconds = run_load('http://127.0.0.1:8000', queries, clients=20)
    print(summarize(results, seconds))

Each of `clients` threads sends its share of `queries` one after another (`GET /generate?<query>`)
and records every answer, so nothing sent goes unaccounted: an answer, or the error that stood in
for one.
"""
import concurrent.futures
import dataclasses
import math
import time
import urllib.error
import urllib.request


@dataclasses.dataclass
class Answer:
    query: str
    status: int          # HTTP status, or 0 when no answer came (connection refused, reset, time-out)
    body: bytes
    headers: dict
    seconds: float


def fetch(url, timeout=60):
    """(status, body, headers) of GET `url`; status 0 when the server did not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error).encode(), {}


def run_load(base_url, queries, clients, timeout=60):
    """[Answer] in the order of `queries`, and the wall-clock seconds the whole run took."""
    def client(indices):
        answers = []
        for index in indices:
            started = time.perf_counter()
            status, body, headers = fetch(f'{base_url}/generate?{queries[index]}', timeout)
            answers.append((index, Answer(queries[index], status, body, headers, time.perf_counter() - started)))
        return answers

    shares = [range(start, len(queries), clients) for start in range(clients)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = dict(pair for share in pool.map(client, shares) for pair in share)
    return [answers[index] for index in range(len(queries))], time.perf_counter() - started


def percentile(values, fraction):
    """The nearest-rank percentile of `values` (fraction in [0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else float('nan')


def summarize(answers, seconds):
    """Counts per outcome, images/s over the run, and p50/p99 latency (ms) of the 200 answers."""
    ok = [answer.seconds for answer in answers if answer.status == 200]
    return {
        'requests': len(answers), 'ok': len(ok), 'busy (503)': sum(answer.status == 503 for answer in answers),
        'other': sum(answer.status not in (200, 503) for answer in answers),
        'ok/s': len(ok) / seconds, 'p50 ms': 1000 * percentile(ok, 0.5), 'p99 ms': 1000 * percentile(ok, 0.99),
    }
