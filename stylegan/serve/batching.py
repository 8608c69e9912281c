"""The bounded queue of pictures to generate, and one worker thread per device that takes them in
batches.

A request handler calls `submit(picture)` and gets a `concurrent.futures.Future` of the picture's
uint8 [H, W, C] pixels at once, or `QueueFull` when `max_queue` pictures are already waiting (the
server answers 503). Each worker owns one copy of the generator on its device, so at most one
generation runs per device; it takes the oldest waiting picture plus every later one that can share
its synthesis call (same noise mode and transform, see `Picture.batch_key`) up to `max_batch`
images, maps each picture's seeds with its own truncation and class, synthesizes all ws in one call,
and splits the images back. A picture whose future was cancelled (its request timed out) while it
waited is dropped without running.
"""
import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time

import torch

from stylegan import generate

log = logging.getLogger('stylegan.serve')


class QueueFull(RuntimeError):
    """`max_queue` pictures are waiting already."""


@dataclasses.dataclass
class _Waiting:
    picture: object
    future: concurrent.futures.Future


class GenerationQueue:
    def __init__(self, generators, max_queue=64, max_batch=16, start=True):
        """`generators`: one generator per device; `start=False` leaves the workers to `start()`
        (tests fill the queue first)."""
        self.generators, self.max_queue, self.max_batch = list(generators), max_queue, max_batch
        self._waiting = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._threads = []
        self.batch_sizes = collections.deque(maxlen=1000)  # pictures per synthesis call, latest last
        self._seconds_per_image = None  # running mean, for Retry-After
        if start:
            self.start()

    def start(self):
        for index, G in enumerate(self.generators):
            thread = threading.Thread(target=self._work, args=(G,), name=f'stylegan-serve-worker{index}', daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, picture):
        future = concurrent.futures.Future()
        with self._condition:
            if self._closed:
                raise RuntimeError('the generation queue is closed')
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f'{len(self._waiting)} requests are waiting')
            self._waiting.append(_Waiting(picture, future))
            self._condition.notify()
        return future

    @property
    def waiting(self):
        with self._condition:
            return len(self._waiting)

    def retry_after(self):
        """Whole seconds until the waiting pictures are likely done (at least 1)."""
        with self._condition:
            images = sum(entry.picture.num_images for entry in self._waiting)
        per_image = self._seconds_per_image or 0.0
        return max(1, math.ceil(images * per_image / max(1, len(self.generators))))

    def close(self):
        """Stop the workers after their current batch; waiting pictures are cancelled."""
        with self._condition:
            self._closed = True
            for entry in self._waiting:
                entry.future.cancel()
            self._waiting.clear()
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    # --- the workers ---------------------------------------------------------------------------

    def _work(self, G):
        while True:
            with self._condition:
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                batch = self._take_batch()
            if batch:
                self._run(G, batch)

    def _take_batch(self):
        """The oldest live picture and the later ones that share its batch key, up to `max_batch`
        images (a larger picture runs alone). Called with the lock held."""
        batch, images, key, kept = [], 0, None, collections.deque()
        while self._waiting:
            entry = self._waiting.popleft()
            if entry.future.cancelled():
                continue
            fits = key is None or (entry.picture.batch_key == key and images + entry.picture.num_images <= self.max_batch)
            if not fits:
                kept.append(entry)
                continue
            if not entry.future.set_running_or_notify_cancel():
                continue
            batch.append(entry)
            images += entry.picture.num_images
            key = entry.picture.batch_key
            if images >= self.max_batch:
                break
        self._waiting.extendleft(reversed(kept))
        return batch

    @torch.no_grad()
    def _run(self, G, batch):
        started = time.perf_counter()
        try:
            first = batch[0].picture.options
            generate.set_transform(G, first)
            ws = torch.cat([entry.picture.ws(G) for entry in batch])  # [sum of num_images, num_ws, w_dim]
            images = generate.synthesize(G, ws, dataclasses.replace(first, batch_size=self.max_batch))
        except Exception as error:  # noqa: BLE001 -- any failure is the requests' answer, not the worker's end
            log.exception('generation failed')
            for entry in batch:
                entry.future.set_exception(error)
            return
        offset = 0
        for entry in batch:
            count = entry.picture.num_images
            try:
                entry.future.set_result(entry.picture.compose(images[offset:offset + count]))
            except Exception as error:  # noqa: BLE001
                entry.future.set_exception(error)
            offset += count
        seconds = (time.perf_counter() - started) / len(images)
        self._seconds_per_image = seconds if self._seconds_per_image is None else 0.8 * self._seconds_per_image + 0.2 * seconds
        self.batch_sizes.append(len(batch))
