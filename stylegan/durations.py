"""Time spans written for people, as the releases write them in logs and metric records."""


def format_duration(seconds):
    """'42s', '3m 07s', '2h 05m 09s', '3d 04h 05m': the release's way of writing a time span."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'
