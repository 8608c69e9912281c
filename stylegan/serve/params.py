"""The query of `GET /generate` -> one `Picture` to generate; bad input -> `ParameterError`.

The parameters are `generate.py`'s options without the dashes, parsed and checked by the same
functions, so a query and a command line mean the same images:

    /generate?seeds=7&trunc=0.7                       one image (seed0007.png)
    /generate?seeds=0-8&grid=3x3                      a grid, seeds in row-major order (grid.png)
    /generate?seeds=0-3                               several seeds without a grid: one row
    /generate?seeds=85&style-mix=55&styles=0-6        the style-mixing figure (style-mix.png)

plus `trunc-cutoff`, `class`, `noise-mode`, `translate=X,Y` and `rotate=DEGREES` (StyleGAN3).
"""
import argparse
import dataclasses
import functools
import math
import re

from stylegan import generate

ACCEPTED = ('seeds', 'trunc', 'trunc-cutoff', 'class', 'noise-mode', 'translate', 'rotate', 'grid', 'style-mix',
            'styles')
NOISE_MODES = ('const', 'random', 'none')
SOFTWARE = 'stylegan (this project) stylegan.serve'


class ParameterError(ValueError):
    """A bad query parameter; one sentence, answered with HTTP 400."""


@dataclasses.dataclass
class Picture:
    """One PNG to answer: `options` as generate.py would get them, and which figure to make."""
    options: generate.GenerateOptions
    kind: str                      # 'image', 'grid' or 'style-mix'
    grid: tuple = (1, 1)           # (rows, columns) for 'grid'
    styles: list = None            # the ws the columns give, for 'style-mix'

    @property
    def num_images(self):
        """How many images the device synthesizes for this picture."""
        rows, columns = len(self.options.seeds), len(self.options.style_mix_cols or [])
        return rows + columns + rows * columns if self.kind == 'style-mix' else len(self.options.seeds)

    @property
    def batch_key(self):
        """Pictures with equal keys can share one synthesis call: the transform is the network's
        state and the noise mode an argument of the call, the same for the whole batch."""
        return self.options.noise_mode, tuple(self.options.translate), self.options.rotate

    def ws(self, G):
        """[num_images, num_ws, w_dim] truncated ws, on G's device."""
        if self.kind == 'style-mix':
            return generate.style_mix_ws(G, self.options.seeds, self.options.style_mix_cols, self.styles, self.options)
        return generate.mapped_ws(G, self.options.seeds, self.options, G.mapping.w_avg.device)

    def compose(self, images):
        """uint8 [num_images, H, W, C] -> the uint8 [H', W', C] picture."""
        if self.kind == 'style-mix':
            return generate.style_mix_figure(images, len(self.options.seeds), len(self.options.style_mix_cols))
        if self.kind == 'grid':
            return generate.tile(images, *self.grid)
        return images[0]

    @property
    def filename(self):
        """The name generate.py gives the same output."""
        return {'image': f'seed{self.options.seeds[0]:04d}.png', 'grid': 'grid.png'}.get(self.kind, 'style-mix.png')

    def provenance_extra(self):
        """The PNG text chunks beyond `generate.provenance`'s, named as generate.py names them."""
        seeds = generate.seeds_text(self.options.seeds)
        if self.kind == 'style-mix':
            return {'row_seeds': seeds, 'column_seeds': generate.seeds_text(self.options.style_mix_cols),
                    'styles': generate.seeds_text(self.styles)}
        if self.kind == 'grid':
            return {'seeds': seeds, 'grid': f'{self.grid[0]}x{self.grid[1]}'}
        return {'seed': seeds}


def parse_query(query, G, max_images, **option_defaults):
    """A `Picture` for the query (a mapping of str -> str, or Starlette's `QueryParams`), checked
    against the network `G`; `option_defaults` are further `GenerateOptions` fields (watermark, ...)."""
    items = list(query.multi_items()) if hasattr(query, 'multi_items') else list(query.items())
    names = [name for name, _ in items]
    for name in names:
        if name not in ACCEPTED:
            raise ParameterError(f"unknown parameter '{name}'; the accepted ones are {', '.join(ACCEPTED)}.")
        if names.count(name) > 1:
            raise ParameterError(f"parameter '{name}' was given {names.count(name)} times; give it once.")
    query = dict(items)
    seeds_up_to_limit = functools.partial(generate.parse_seeds, limit=max_images)  # no 0-4000000000 lists
    if 'seeds' not in query:
        raise ParameterError("parameter 'seeds' is missing; give seeds such as seeds=7 or seeds=0-3,7.")
    if 'grid' in query and 'style-mix' in query:
        raise ParameterError("'grid' and 'style-mix' make different figures; give one of them.")
    if 'styles' in query and 'style-mix' not in query:
        raise ParameterError("'styles' chooses the ws of a style mix; give 'style-mix' with it, or leave it out.")

    options = generate.GenerateOptions(
        seeds=_parsed(query, 'seeds', seeds_up_to_limit), outdir='',
        truncation_psi=_parsed(query, 'trunc', _finite_number, 1.0),
        truncation_cutoff=_parsed(query, 'trunc-cutoff', _integer, None),
        class_idx=_parsed(query, 'class', _integer, None),
        noise_mode=_parsed(query, 'noise-mode', _noise_mode, 'const'),
        translate=_parsed(query, 'translate', _finite_pair, (0.0, 0.0)),
        rotate=_parsed(query, 'rotate', _finite_number, 0.0),
        grid=_parsed(query, 'grid', generate.parse_grid, None),
        style_mix_cols=_parsed(query, 'style-mix', seeds_up_to_limit, None),
        style_mix_styles=_parsed(query, 'styles', seeds_up_to_limit, None),
        **option_defaults)
    if options.grid is None and options.style_mix_cols is None and len(options.seeds) > 1:
        options.grid = (1, len(options.seeds))  # several seeds and no grid: one row
    try:
        generate.validate_for_network(G, options)
    except generate.GenerateError as error:
        # The shared checks name command-line options (--class=5); here they are query parameters.
        raise ParameterError(re.sub(r'--(?=[a-z])', '', str(error))) from None

    if options.style_mix_cols is not None:
        picture = Picture(options, 'style-mix', styles=generate.style_mix_styles(G, options))
    elif options.grid is not None:
        picture = Picture(options, 'grid', grid=options.grid)
    else:
        picture = Picture(options, 'image')
    if picture.num_images > max_images:
        raise ParameterError(f'this request needs {picture.num_images} images; the server makes at most '
                             f'{max_images} per request (the server was started with --max-images={max_images}); ask for fewer.')
    return picture


def _parsed(query, name, parse, default=None):
    """`parse(query[name])`, or `default` when absent; a parse failure names the parameter."""
    if name not in query:
        return default
    try:
        return parse(query[name])
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise ParameterError(f'{name}: {error}' if str(error).endswith('.') else f'{name}: {error}.') from None


def _finite_number(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"'{text}' is not a number; give a finite number such as 0.7")
    return value


def _finite_pair(text):
    x, y = generate.parse_vec2(text)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"'{text}' is not a pair of finite numbers such as 0.3,1")
    return x, y


def _integer(text):
    if not re.fullmatch(r'\s*-?\d+\s*', text):
        raise ValueError(f"'{text}' is not a whole number")
    return int(text)


def _noise_mode(text):
    if text not in NOISE_MODES:
        raise ValueError(f"'{text}' is not a noise mode; give one of {', '.join(NOISE_MODES)}")
    return text
