"""Shared test set-up: the fixture folder, `--runslow`, and a small thread count for 2-core CI."""
import os
import pathlib

import pytest
import torch

DATA_DIR = pathlib.Path(__file__).parent / 'data'
RELEASE_FIXTURES = ['sg2ada-sg2-32', 'sg3repo-sg2-32', 'sg3repo-sg3t-32', 'sg3repo-sg3r-32']

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running test, run with --runslow (make test-all)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip_slow = pytest.mark.skip(reason='slow; run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def data_dir():
    return DATA_DIR
