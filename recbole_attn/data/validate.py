"""Checks of a RecBole atomic ``.inter`` file, run before RecBole loads it.

RecBole reads atomic files with pandas and fails late and obscurely on malformed input (a
``ValueError`` deep inside ``_load_feat``, a ``KeyError`` when a column is missing), or not at
all (a short line becomes NaN, an empty id becomes a token of its own, a second header line
pasted into the body becomes an interaction). :func:`check_inter_file` reads the file once,
quickly (about a second per million lines), and raises :class:`~recbole_attn.errors.DataError`
naming the file, and the 1-based line for a problem on one line, for:

* an empty file, or a header without interactions;
* a header that is not ``name:type`` columns (types ``token``, ``token_seq``, ``float``,
  ``float_seq``), Windows line endings in the header, or a column named twice;
* a missing user, item or time column (the message lists the columns found);
* a line whose number of fields differs from the header's;
* a repeated header line in the body (two files concatenated);
* an empty user, item or time value, or an id that pandas reads as missing (``NA``, ``null``,
  ``nan``, ...); a value of a loaded ``float`` column that is not a number
  (the time must be finite; other float columns may be empty: RecBole fills them with the mean);
* a double quote anywhere in the data: RecBole's reader treats it as quoting, so ``"u1"`` and
  ``u1`` would silently become one id and a lone ``"`` would join the following lines;
* no user with two or more interactions (nothing to train on), no user with three or more
  under leave-one-out (nothing to test), or fewer than ``min_rows`` interactions when the
  caller asks for a minimum.

What is *not* an error, by design:

* **Users with a single interaction.** A sequential model needs a previous item to predict an
  item, so RecBole builds no row at all for such a user: the user is left out of training,
  validation and test. Users with 2 interactions only train; with 3 they train and are tested
  (no validation row); from 4 on they have one row in each split (leave-one-out). The count of
  single-interaction users is returned so the caller can log it.
* **Datasets smaller than a batch.** RecBole then trains on one partial batch per epoch.
* Blank lines: RecBole's reader skips them; so does this check (line numbers stay the file's).
"""

import csv
import io
from itertools import repeat

import numpy as np
import pandas as pd

from recbole_attn.errors import DataError

FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")
# strings that pandas (hence RecBole) reads as missing: as ids they would all become one empty token
NA_STRINGS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])
EXAMPLE_HEADER = "user_id:token<TAB>item_id:token<TAB>timestamp:float"


def _fail(path, message, line=None):
    where = f"[{path}] line {line}" if line is not None else f"[{path}]"
    raise DataError(f"{where}: {message}")


def _looks_like_header(line, sep):
    fields = line.split(sep)
    return all(f.count(":") == 1 and f.split(":")[1].strip() in FEATURE_TYPES for f in fields)


def _read_text(path, encoding):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read [{path}]: {e.strerror or e}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        _fail(path, f"not valid {encoding} text (byte 0x{raw[e.start]:02x}); set `encoding` "
                    f"to the file's encoding or convert the file", line)
    except LookupError:
        raise DataError(f"invalid value for [encoding]: {encoding!r}; allowed: a Python codec name") from None


def _parse_header(path, header, sep):
    if header.endswith("\r"):
        _fail(path, "the file has Windows line endings (\\r\\n), which RecBole cannot read in the header; "
                    "convert it with: sed -i 's/\\r$//' FILE", 1)
    if not header.strip():
        _fail(path, f"the first line is blank; it must be the header, e.g. {EXAMPLE_HEADER}", 1)
    names, types = [], []
    for col, field in enumerate(header.split(sep), 1):
        parts = field.split(":")
        if len(parts) != 2 or not parts[0]:
            hint = " (is the file tab-separated?)" if col == 1 and sep not in header else ""
            _fail(path, f"header column {col} [{field}] is not name:type{hint}; expected a header such as "
                        f"{EXAMPLE_HEADER}, types one of {', '.join(FEATURE_TYPES)}", 1)
        name, ftype = parts
        if ftype not in FEATURE_TYPES:
            _fail(path, f"header column {col} [{field}] has type [{ftype}]; allowed: {' | '.join(FEATURE_TYPES)}", 1)
        if name in names:
            _fail(path, f"header names column [{name}] twice", 1)
        names.append(name)
        types.append(ftype)
    return names, types


def _columns(text, rows, sep, names, index, floats):
    """``{name: array}`` of the columns at ``index`` (field counts already checked): float64 for
    the ``floats`` columns when every value parses, else object arrays of the strings."""
    # pandas' C reader: fast; blank lines skipped as RecBole does, quotes kept as text
    options = dict(sep=sep, header=None, skiprows=1, usecols=index, na_filter=False, quoting=csv.QUOTE_NONE,
                   lineterminator="\n", engine="c")
    for dtype in ({k: (np.float64 if k in floats else str) for k in index}, str):
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=dtype, **options)
        except (ValueError, pd.errors.ParserError):
            continue  # a value that is not a number: found and reported with its line below
        if len(frame) == len(rows):
            return {name: frame[k].to_numpy() if k in floats and dtype is not str else
                    frame[k].to_numpy(dtype=object) for name, k in zip(names, index)}
        break
    split = list(zip(*(r.split(sep) for r in rows)))
    return {name: np.array(split[k], dtype=object) for name, k in zip(names, index)}


def check_inter_file(path, uid_field="user_id", iid_field="item_id", time_field="timestamp", min_rows=None,
                     sep="\t", encoding="utf-8", load_columns=None, leave_one_out=True):
    """Check a RecBole atomic ``.inter`` file; see the module docstring for what is checked.

    Args:
        path (str): the ``.inter`` file.
        uid_field, iid_field, time_field (str): RecBole's ``USER_ID_FIELD``, ``ITEM_ID_FIELD``
            and ``TIME_FIELD``; ``time_field=None`` does not require a time column.
        min_rows (int, optional): fewer interactions than this is an error.
        sep (str): RecBole's ``field_separator``.
        encoding (str): RecBole's ``encoding``.
        load_columns (list, optional): RecBole's ``load_col['inter']``: only these columns'
            values are checked (RecBole does not read the others); ``None`` checks every column.
        leave_one_out (bool): the run splits leave-one-out (``eval_args: {split: {LS: ...}}``,
            the plugin's default): a file where no user has 3 interactions, so that nothing
            could be tested, is an error.

    Returns:
        dict: ``users``, ``items``, ``interactions`` and ``single_interaction_users`` (users that
        RecBole leaves out of every split), counted over the whole file; ``train_users``,
        ``test_users`` and ``valid_users``: users with 2, 3, 4 or more interactions, who have a
        row in that split of the leave-one-out protocol.

    Raises:
        DataError: naming the file, and the line where one line is at fault.
    """
    path = str(path)
    text = _read_text(path, encoding)
    if not text.strip():
        _fail(path, f"the file is empty; expected a header line such as {EXAMPLE_HEADER} "
                    "followed by one interaction per line")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline
    header = lines[0]
    names, types = _parse_header(path, header, sep)

    required = [f for f in (uid_field, iid_field, time_field) if f]
    for field in required:
        if field not in names:
            found = ", ".join(f"{n}:{t}" for n, t in zip(names, types))
            _fail(path, f"column [{field}] is missing from the header (line 1); found columns: {found}. "
                        f"A header looks like {EXAMPLE_HEADER}")
    expected_type = {uid_field: "token", iid_field: "token", time_field: "float"}
    for field in required:
        ftype = types[names.index(field)]
        if ftype != expected_type[field]:
            _fail(path, f"column [{field}] has type [{ftype}]; it must be [{expected_type[field]}]", 1)

    body = lines[1:]
    lengths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    line_no = np.flatnonzero(lengths) + 2  # file line of each interaction
    if len(line_no) == 0:
        _fail(path, "the file has a header but no interactions")
    rows = body if len(line_no) == len(body) else [body[i - 2] for i in line_no]

    if '"' in text:  # RecBole's reader treats " as quoting: "u1" and u1 become one id, a lone " joins lines
        quoted = np.flatnonzero(np.fromiter(map(str.__contains__, rows, repeat('"')), dtype=bool, count=len(rows)))
        if len(quoted):
            _fail(path, 'double quote ("): RecBole\'s reader treats it as quoting (a lone one joins the '
                        'following lines into this one); remove double quotes from the file', line_no[quoted[0]])
    if header in rows:
        _fail(path, "the header line appears again (were two files concatenated?); remove it",
              line_no[rows.index(header)])
    n_cols = len(names)
    n_fields = np.fromiter(map(str.count, rows, repeat(sep)), dtype=np.int64, count=len(rows)) + 1
    bad = np.flatnonzero(n_fields != n_cols)
    if len(bad):
        i = bad[0]
        what = "a header line" if _looks_like_header(rows[i], sep) else f"{n_fields[i]} fields"
        _fail(path, f"{what}, but the header has {n_cols} ({', '.join(names)}); fields are separated by "
                    f"{'tabs' if sep == chr(9) else repr(sep)}", line_no[i])

    check = [k for k, n in enumerate(names) if load_columns is None or n in load_columns or n in required]
    floats = [k for k in check if types[k] == "float"]
    columns = _columns(text, rows, sep, [names[k] for k in check], check, floats)
    for k in check:
        name, ftype = names[k], types[k]
        values = columns[name]
        if values.dtype == np.float64:  # parsed as numbers already
            bad = np.flatnonzero(~np.isfinite(values)) if name == time_field else []
            if len(bad):
                _fail(path, f"column [{name}] ({ftype}) has value {float(values[bad[0]])!r}, which is not a finite number",
                      line_no[bad[0]])
            continue
        if name in required:
            missing = np.flatnonzero(pd.Series(values).isin(NA_STRINGS).to_numpy())
            if len(missing):
                value = values[missing[0]]
                what = "empty value" if value == "" else f"value {value!r}, which RecBole reads as missing,"
                _fail(path, f"{what} in column [{name}]", line_no[missing[0]])
        if ftype != "float":
            continue
        numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
        if name == time_field:
            bad = np.flatnonzero(~np.isfinite(numbers))
        else:  # empty or nan: RecBole fills the mean; anything else it cannot read
            bad = np.flatnonzero(np.isnan(numbers))
            bad = [i for i in bad if values[i].strip().lower() not in ("", "nan")][:1]
        if len(bad):
            i = bad[0]
            if _looks_like_header(rows[i], sep):
                _fail(path, "a header line in the middle of the data (were two files concatenated?); remove it",
                      line_no[i])
            need = "a finite number" if name == time_field else "a number"
            _fail(path, f"column [{name}] ({ftype}) has value {values[i]!r}, which is not {need}", line_no[i])

    per_user = pd.Series(columns[uid_field]).value_counts() if uid_field else pd.Series(dtype=np.int64)
    counts = {
        "users": int(len(per_user)),
        "items": int(pd.Series(columns[iid_field]).nunique()) if iid_field else 0,
        "interactions": len(rows),
        "single_interaction_users": int((per_user == 1).sum()),
        # users with a row in each split of RecBole's leave-one-out (LS valid_and_test)
        "train_users": int((per_user >= 2).sum()),
        "test_users": int((per_user >= 3).sum()),
        "valid_users": int((per_user >= 4).sum()),
    }
    if min_rows is not None and counts["interactions"] < min_rows:
        _fail(path, f"{counts['interactions']} interactions; at least {min_rows} are needed")
    if uid_field and counts["users"] and counts["train_users"] == 0:
        _fail(path, f"all {counts['users']} users have a single interaction: a sequential model needs users "
                    "with 2 or more interactions to train (3 or more to be tested)")
    if uid_field and leave_one_out and counts["test_users"] == 0:
        _fail(path, f"none of the {counts['users']} users has 3 or more interactions: the leave-one-out split "
                    "(eval_args split LS) would leave nothing to test (a user needs 2 to train, 3 to be "
                    "tested, 4 to be validated)")
    return counts
