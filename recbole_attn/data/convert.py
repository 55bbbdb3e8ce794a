"""Convert raw interaction files into RecBole atomic ``.inter`` files.

Usage::

    python -m recbole_attn.data.convert --input PATH --name NAME --format {seq,movielens,csv}
        [--header] [--output-dir DIR] [--min-rating R] [--user-core K] [--item-core K] [--force]

Input formats:

* ``seq``: one user per line, ``user item1 item2 ...`` (whitespace separated, oldest first).
  There are no timestamps, so each item's position in its line (0, 1, 2, ...) becomes its
  ``timestamp``; RecBole's time ordering then keeps the given order. A line with a user and no
  items is skipped (a warning gives the count); a user on two lines is an error, because the
  positions of two lines cannot be ordered against each other.
* ``movielens``: MovieLens ``ratings.dat`` lines ``user::item::rating::timestamp``.
* ``csv``: comma separated ``user,item,rating,timestamp`` (the column order of the header-less
  Amazon ratings-only files). With ``--header`` the first line names the columns and they are
  found by name (``user_id``, ``userId``, ``reviewerID``, ``asin``, ``movieId``, ``overall``,
  ``unixReviewTime``, ...); the rating column is then optional and other columns are ignored.

The output ``<output_dir>/<name>/<name>.inter`` is tab separated with the header
``user_id:token  item_id:token  [rating:float]  timestamp:float``, sorted by user (numerically
when every user id is an integer) and then by time; ties keep the input order. Ids are written
as the raw tokens: RecBole remaps them itself.

Problems with the input raise :class:`~recbole_attn.errors.DataError` naming the file and the
1-based line; blank lines are skipped.
"""

import argparse
import csv
import logging
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_attn.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = ("seq", "movielens", "csv")

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

# Plain decimal numbers only: Python's float() also takes "1_000", "nan", "inf" and non-ASCII
# digits, which RecBole's pandas reader rejects or which are no usable rating or time.
NUMBER_RE = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"

# RecBole reads the .inter file with pandas' defaults: these ids would turn into missing values
# (and then into the padding id), and a double quote would start a quoted field.
NA_TOKENS = frozenset([
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
])
BAD_CHARS = ('"', "\t", "\r", "\n", "\0")

# Header names accepted for each column of a CSV file with --header (compared in lower case,
# without a RecBole-style ":type" suffix).
COLUMN_ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "reviewerid", "customer_id"),
    "item": ("item", "item_id", "itemid", "iid", "asin", "movieid", "movie_id", "product_id",
             "productid"),
    "rating": ("rating", "ratings", "overall", "score", "stars"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "unix_review_time"),
}
ALIAS_TO_COLUMN = {alias: column for column, names in COLUMN_ALIASES.items() for alias in names}

HEADER = {
    "user": "user_id:token",
    "item": "item_id:token",
    "rating": "rating:float",
    "timestamp": "timestamp:float",
}


def default_output_dir():
    """The ``dataset_atomic`` folder of the repository, or ``./dataset_atomic`` outside one."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "dataset_atomic"
    return Path.cwd() / "dataset_atomic"


def _read_lines(path):
    """Return the lines of a UTF-8 file without their "\n" (numbered from 1 by the callers)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")  # -sig: drop the byte order mark of spreadsheet exports
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {lineno} is not valid UTF-8 text") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the file ends with a newline
    return lines


def _parse_seq(path):
    users, items, times, lines = [], [], [], []
    first_line = {}
    skipped = []
    for lineno, text in enumerate(_read_lines(path), 1):
        tokens = text.split()
        if not tokens:
            continue
        user, seq = tokens[0], tokens[1:]
        if user in first_line:
            raise DataError(
                f"{path}: line {lineno}: user {user!r} already has a line (line "
                f"{first_line[user]}); the seq format needs exactly one line per user"
            )
        first_line[user] = lineno
        if not seq:
            skipped.append(lineno)
            continue
        n = len(seq)
        users.extend([user] * n)
        items.extend(seq)
        times.extend(range(n))
        lines.extend([lineno] * n)
    if skipped:
        logger.warning(
            "%s: skipped %d line(s) with a user but no items (first: line %d)",
            path, len(skipped), skipped[0],
        )
    columns = {"user": users, "item": items, "timestamp": times}
    return columns, lines


def _columns(rows, index):
    """Split parsed rows (lists of fields) into one list per output column."""
    return {column: [row[i] for row in rows] for column, i in index.items()}


def _parse_movielens(path):
    rows = [text.split("::") for text in _read_lines(path)]
    lines = list(range(1, len(rows) + 1))
    if any(len(fields) != 4 for fields in rows):  # blank or malformed lines: the slow path
        kept_rows, kept_lines = [], []
        for lineno, fields in zip(lines, rows):
            if len(fields) != 4:
                if len(fields) == 1 and not fields[0].strip():
                    continue
                raise DataError(
                    f"{path}: line {lineno}: expected 4 fields 'user::item::rating::timestamp', "
                    f"found {len(fields)}"
                )
            kept_rows.append(fields)
            kept_lines.append(lineno)
        rows, lines = kept_rows, kept_lines
    return _columns(rows, {"user": 0, "item": 1, "rating": 2, "timestamp": 3}), lines


def _normalize_name(field):
    return field.strip().strip('"').split(":")[0].strip().lower()


def _find_columns(path, lineno, fields):
    """Map each known column to its index in a CSV header line."""
    found = {}
    for index, field in enumerate(fields):
        column = ALIAS_TO_COLUMN.get(_normalize_name(field))
        if column is None:
            continue
        if column in found:
            raise DataError(
                f"{path}: line {lineno}: header columns {fields[found[column]]!r} and "
                f"{field!r} both name the {column} column"
            )
        found[column] = index
    for column in ("user", "item", "timestamp"):
        if column not in found:
            raise DataError(
                f"{path}: line {lineno}: header {','.join(fields)!r} has no {column} column "
                f"(accepted names: {', '.join(COLUMN_ALIASES[column])})"
            )
    return found


def _parse_csv(path, header):
    index = None if header else {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    width = 4
    header_fields = None
    rows, lines = [], []
    reader = csv.reader(line + "\n" for line in _read_lines(path))
    previous = 0
    try:
        for fields in reader:
            lineno = previous + 1  # first physical line of this record
            previous = reader.line_num
            if index is None or len(fields) != width or fields == header_fields:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                if index is None:
                    index = _find_columns(path, lineno, [f.strip() for f in fields])
                    width = len(fields)
                    header_fields = fields
                    continue
                if fields == header_fields:
                    raise DataError(
                        f"{path}: line {lineno} repeats the header line (were files concatenated?)"
                    )
                expected = "as in the header" if header else "user,item,rating,timestamp"
                raise DataError(
                    f"{path}: line {lineno}: expected {width} comma-separated fields "
                    f"({expected}), found {len(fields)}"
                )
            rows.append(fields)
            lines.append(lineno)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    return _columns(rows, index or {}), lines


def _looks_like_header(row):
    """True when a row that failed to parse names known columns, e.g. a stray header line."""
    return sum(_normalize_name(str(row[c])) in ALIAS_TO_COLUMN for c in HEADER if c in row) >= 2


def _strip(df, column):
    """Strip surrounding whitespace from a text column (checked on its unique values: fast)."""
    if any(u != u.strip() for u in pd.unique(df[column])):
        df[column] = df[column].str.strip()


def _check_numbers(df, column, path, header):
    """Return the float values of a text column, or name the first line that is not a number."""
    number = re.compile(NUMBER_RE)
    bad = [u for u in pd.unique(df[column]) if not number.fullmatch(u)]
    if bad:
        row = df[df[column].isin(bad)].iloc[0]
        message = f"{path}: line {row['line']}: {column} {row[column]!r} is not a number"
        if _looks_like_header(row):
            if header:
                message += " (it repeats a header line in the middle of the file)"
            else:
                message += " (it looks like a header line; pass --header if the file has one)"
        raise DataError(message)
    values = df[column].astype(np.float64)
    finite = np.isfinite(values.to_numpy())
    if not finite.all():
        row = df.iloc[int(np.argmin(finite))]
        raise DataError(f"{path}: line {row['line']}: {column} {row[column]!r} is out of range")
    return values


def _check_tokens(df, column, path):
    """Refuse ids that RecBole's pandas reader would not read back unchanged."""
    bad = [t for t in pd.unique(df[column]) if t in NA_TOKENS or any(c in t for c in BAD_CHARS)]
    if bad:
        first = df.loc[df[column].isin(bad), ["line", column]].iloc[0]
        what = "is empty" if first[column] == "" else (
            "would be read as a missing value by RecBole" if first[column] in NA_TOKENS
            else "contains a double quote, tab, line break or NUL")
        raise DataError(f"{path}: line {first['line']}: {column} id {first[column]!r} {what}")


def _k_core(df, user_core, item_core):
    """Drop users/items below their thresholds, repeating until every remaining one passes.

    Removing a user can push an item below its threshold (and the other way round), so one
    pass is not enough when both are given.
    """
    while True:
        keep = pd.Series(True, index=df.index)
        if user_core:
            keep &= df["user"].map(df["user"].value_counts()) >= user_core
        if item_core:
            keep &= df["item"].map(df["item"].value_counts()) >= item_core
        if keep.all():
            return df
        df = df[keep]


def _sort(df):
    """Sort by user (numerically when all user ids are integers), then time, then input order."""
    users = pd.unique(df["user"])
    numeric = all(u.isascii() and u.isdigit() and len(u) <= 18 for u in users)
    df = df.assign(_order=np.arange(len(df)))
    if numeric:
        df = df.assign(_user=df["user"].astype(np.int64))
        by = ["_user", "_time", "_order"]
        if df["_user"].nunique() != len(users):
            by.insert(1, "user")  # keeps "07" and "7" apart
    else:
        by = ["user", "_time", "_order"]
    return df.sort_values(by, kind="stable")


def _check_positive_int(value, option):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{option} must be a positive integer, got {value!r}")


def convert(input_path, name, fmt, output_dir=None, min_rating=None, user_core=None,
            item_core=None, force=False, header=False):
    """Convert ``input_path`` into ``<output_dir>/<name>/<name>.inter``.

    Returns a dict with the ``users``, ``items`` and ``interactions`` counts after filtering and
    the written ``path`` (a string). Raises :class:`DataError` for any problem with the options
    or the input; nothing is written then.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise DataError(f"dataset name {name!r} may only use letters, digits, '_', '.' and '-'")
    if header and fmt != "csv":
        raise DataError("--header only applies to --format csv")
    if min_rating is not None:
        if fmt == "seq":
            raise DataError("--min-rating needs ratings, and the seq format has none")
        if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float)) \
                or not math.isfinite(min_rating):
            raise DataError(f"--min-rating must be a number, got {min_rating!r}")
    _check_positive_int(user_core, "--user-core")
    _check_positive_int(item_core, "--item-core")

    input_path = Path(input_path)
    if not input_path.is_file():
        what = "is not a file" if input_path.exists() else "not found"
        raise DataError(f"input file {what}: {input_path}")
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir()
    out_path = output_dir / name / f"{name}.inter"
    if out_path.exists() and not force:
        raise DataError(f"{out_path} already exists; pass --force to overwrite it")

    if fmt == "seq":
        columns, lines = _parse_seq(input_path)
    elif fmt == "movielens":
        columns, lines = _parse_movielens(input_path)
    else:
        columns, lines = _parse_csv(input_path, header)
    if not lines:
        raise DataError(f"{input_path}: no interactions found")

    df = pd.DataFrame(columns)
    df["line"] = lines
    if fmt != "seq":  # seq tokens come from str.split(): no surrounding whitespace
        for column in columns:
            _strip(df, column)
    for column in ("user", "item"):
        _check_tokens(df, column, input_path)
    if fmt == "seq":
        df["_time"] = df["timestamp"]
    else:
        df["_time"] = _check_numbers(df, "timestamp", input_path, header)
    has_rating = "rating" in df
    if has_rating:
        df["_rating"] = _check_numbers(df, "rating", input_path, header)

    if min_rating is not None:
        if not has_rating:
            raise DataError(f"--min-rating needs a rating column, and {input_path} has none")
        df = df[df["_rating"] >= min_rating]
    if user_core or item_core:
        df = _k_core(df, user_core, item_core)
    if df.empty:
        raise DataError(f"{input_path}: no interactions left after filtering")
    df = _sort(df)

    columns = ["user", "item"] + (["rating"] if has_rating else []) + ["timestamp"]
    _write_atomic(df[columns], [HEADER[c] for c in columns], out_path)
    return {
        "users": int(df["user"].nunique()),
        "items": int(df["item"].nunique()),
        "interactions": int(len(df)),
        "path": str(out_path),
    }


def _write_atomic(df, header, out_path):
    """Write through a temporary file so a failed run never leaves a half-written .inter."""
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            df.to_csv(f, sep="\t", index=False, header=header, lineterminator="\n")
        os.replace(tmp, out_path)
    except OSError as e:
        raise DataError(f"cannot write {out_path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m recbole_attn.data.convert",
        description="Convert a raw interaction file into a RecBole atomic file "
                    "<output-dir>/<name>/<name>.inter.",
    )
    parser.add_argument("--input", required=True, metavar="PATH", help="raw input file")
    parser.add_argument("--name", required=True,
                        help="dataset name ([A-Za-z0-9_.-]+), used for the folder and file name")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                        help="seq: 'user item1 item2 ...' per line, oldest first (item positions "
                             "become timestamps; a user without items is skipped); "
                             "movielens: 'user::item::rating::timestamp'; "
                             "csv: 'user,item,rating,timestamp' or named columns with --header")
    parser.add_argument("--header", action="store_true",
                        help="csv only: the first line names the columns (user/user_id/userId/"
                             "reviewerID, item/item_id/itemId/asin/movieId, rating/overall, "
                             "timestamp/time/unixReviewTime)")
    parser.add_argument("--output-dir", metavar="DIR", default=None,
                        help="where to write <name>/<name>.inter (default: the repository's "
                             "dataset_atomic folder)")
    parser.add_argument("--min-rating", type=float, metavar="R", default=None,
                        help="drop interactions rated below R (not for --format seq)")
    parser.add_argument("--user-core", type=int, metavar="K", default=None,
                        help="drop users with fewer than K interactions")
    parser.add_argument("--item-core", type=int, metavar="K", default=None,
                        help="drop items with fewer than K interactions. The core filters are "
                             "applied repeatedly until every remaining user and item passes "
                             "(k-core: dropping a user can push an item below K and the other "
                             "way round); --min-rating is applied before them")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return parser


def main(argv=None):
    """Command line entry point: returns 0 on success, 2 on a data or usage error."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error (or --help)
        return e.code if isinstance(e.code, int) else 2
    try:
        result = convert(
            args.input, args.name, args.fmt, output_dir=args.output_dir,
            min_rating=args.min_rating, user_core=args.user_core, item_core=args.item_core,
            force=args.force, header=args.header,
        )
    except DataError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(f"wrote {result['path']}")
    for key in ("users", "items", "interactions"):
        print(f"{key}: {result[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
