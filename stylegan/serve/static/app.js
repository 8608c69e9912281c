'use strict';
// The explorer page: turns the controls into a /generate query, shows the PNG the server answers.
// At most one request is in flight; controls moved meanwhile are sent once it returns, so the
// image follows a dragged slider without queueing every intermediate position.
// For tests: <body data-state> is 'idle' once the image of the current controls (or their error)
// is shown, and data-shown holds the query of the shown image.

const $ = (id) => document.getElementById(id);
const MAX_SEED = 4294967295;
let info = null;
let inFlight = false;
let again = false;
let shownUrl = null;

function seedText() {
  return $('seed').value.trim();
}

// The n*n seeds of the neighbour grid: centred on `seed`, never below 0 or above MAX_SEED.
function gridRange(seed, n) {
  const first = Math.min(Math.max(0, seed - Math.floor(n * n / 2)), MAX_SEED - n * n + 1);
  return [first, first + n * n - 1];
}

function query() {
  const p = new URLSearchParams();
  const view = $('view').value;
  const seed = Number(seedText());
  const seedIsValid = /^\d+$/.test(seedText()) && seed <= MAX_SEED;
  if (view === 'grid' && seedIsValid) {
    const n = Number($('grid-size').value);
    const [first, last] = gridRange(seed, n);
    p.set('seeds', `${first}-${last}`);
    p.set('grid', `${n}x${n}`);
  } else {
    p.set('seeds', seedText());  // as typed: a bad seed gets the server's sentence
  }
  if (view === 'mix') {
    p.set('style-mix', $('mix-seed').value.trim());
    p.set('styles', `${$('mix-from').value.trim()}-${$('mix-to').value.trim()}`);
  }
  p.set('trunc', $('trunc').value);
  if ($('trunc-cutoff').value.trim() !== '') p.set('trunc-cutoff', $('trunc-cutoff').value.trim());
  if (info && info.c_dim > 0) p.set('class', $('class').value);
  if ($('noise-mode').value !== 'const') p.set('noise-mode', $('noise-mode').value);
  if (info && info.architecture === 'StyleGAN3') {
    const x = $('translate-x').value, y = $('translate-y').value, angle = $('rotate').value;
    if (Number(x) !== 0 || Number(y) !== 0) p.set('translate', `${x},${y}`);
    if (Number(angle) !== 0) p.set('rotate', angle);
  }
  return p.toString();
}

function setStatus(text, isError) {
  $('status').textContent = text;
  $('status').classList.toggle('error', Boolean(isError));
}

function filenameOf(response) {
  const match = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
  return match ? match[1] : 'image.png';
}

function showImage(blob, q, filename, started) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(blob);
    const img = $('image');
    img.onload = img.onerror = () => {
      if (shownUrl) URL.revokeObjectURL(shownUrl);
      shownUrl = url;
      $('download').href = url;
      $('download').download = filename;
      document.body.dataset.shown = q;
      const ms = Math.round(performance.now() - started);
      setStatus(`${filename} · ${img.naturalWidth}×${img.naturalHeight} · ${ms} ms`);
      resolve();
    };
    img.src = url;
  });
}

async function refresh() {
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  document.body.dataset.state = 'loading';
  const q = query();
  $('link').href = '/generate?' + q;
  const started = performance.now();
  try {
    const response = await fetch('/generate?' + q);
    if (response.ok) {
      await showImage(await response.blob(), q, filenameOf(response), started);
    } else {
      const body = await response.json().catch(() => ({ error: response.statusText }));
      document.body.dataset.shown = q;
      setStatus(`${response.status}: ${body.error}`, true);
    }
  } catch (error) {
    setStatus(`the server cannot be reached (${error.message}).`, true);
  }
  inFlight = false;
  if (again) {
    again = false;
    refresh();
  } else {
    document.body.dataset.state = 'idle';
  }
}

function showViewRows() {
  const view = $('view').value;
  $('grid-row').hidden = view !== 'grid';
  $('mix-row').hidden = view !== 'mix';
  $('image').classList.toggle('clickable', view === 'grid');
}

function stepSeed(delta) {
  const seed = Number(seedText());
  if (!/^\d+$/.test(seedText())) return;
  $('seed').value = String(Math.min(MAX_SEED, Math.max(0, seed + delta)));
  refresh();
}

// Neighbour grid: a click on a cell makes its seed the current one (and re-centres the grid).
function pickGridCell(event) {
  if ($('view').value !== 'grid' || !/^\d+$/.test(seedText())) return;
  const n = Number($('grid-size').value);
  const rect = $('image').getBoundingClientRect();
  const column = Math.min(n - 1, Math.floor((event.clientX - rect.left) / rect.width * n));
  const row = Math.min(n - 1, Math.floor((event.clientY - rect.top) / rect.height * n));
  $('seed').value = String(gridRange(Number(seedText()), n)[0] + row * n + column);
  refresh();
}

function describe(network) {
  const classes = network.c_dim > 0 ? `${network.c_dim} classes` : 'unconditional';
  $('network-info').textContent = `${network.network} · ${network.architecture} ` +
    `${network.img_resolution}×${network.img_resolution} · ${classes} · ${network.num_ws} ws · ` +
    `sha256 ${network['network-sha256'].slice(0, 12)} · ${network.devices.join(', ')}` +
    (network.watermark ? ' · watermarked' : '');
  if (network.c_dim > 0) {
    $('class').replaceChildren(...Array.from({ length: network.c_dim }, (_, i) => new Option(String(i), String(i))));
    $('class-row').hidden = false;
  }
  $('transform').hidden = network.architecture !== 'StyleGAN3';
  $('trunc-cutoff').max = network.num_ws;
  $('mix-from').max = $('mix-to').max = network.num_ws - 1;
  $('mix-to').value = Math.min(6, network.num_ws - 1);
}

async function start() {
  try {
    const response = await fetch('/info');
    info = await response.json();
  } catch (error) {
    setStatus(`the server cannot be reached (${error.message}).`, true);
    document.body.dataset.state = 'idle';
    return;
  }
  describe(info);
  // 'input' follows a dragged slider or typing; 'change' covers selects (some input methods send only it).
  const onControl = (event) => {
    const shown = $(`${event.target.id}-value`);
    if (shown) shown.textContent = event.target.value;
    if (event.target.id === 'view') showViewRows();
    if (inFlight || query() !== document.body.dataset.shown) refresh();
  };
  $('controls').addEventListener('input', onControl);
  $('controls').addEventListener('change', onControl);
  $('seed-down').addEventListener('click', () => stepSeed(-1));
  $('seed-up').addEventListener('click', () => stepSeed(1));
  $('image').addEventListener('click', pickGridCell);
  showViewRows();
  refresh();
}

window.explorer = { query };
start();
