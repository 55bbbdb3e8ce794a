"""Tests of the raw-data converter ``recbole_attn.data.convert``."""

import csv
import logging
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recbole_attn.data.convert import convert, main
from recbole_attn.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "data" / "raw"

SEQ_HEADER = ["user_id:token", "item_id:token", "timestamp:float"]
RATED_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def read_inter(path):
    """Header fields and rows (lists of strings) of a written .inter file."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    rows = [line.split("\t") for line in lines[:-1]]
    return rows[0], rows[1:]


def run(tmp_path, text, fmt, filename="input.txt", **kwargs):
    """Convert ``text`` and return (result, header, rows)."""
    path = write(tmp_path / filename, text)
    result = convert(path, "data", fmt, output_dir=tmp_path / "out", **kwargs)
    header, rows = read_inter(result["path"])
    return result, header, rows


# ---------------------------------------------------------------- formats


def test_seq_format(tmp_path):
    text = "u2 c a\n\nu1 a b c\n   \nu3 b\n"
    result, header, rows = run(tmp_path, text, "seq")
    assert header == SEQ_HEADER
    assert rows == [
        ["u1", "a", "0"], ["u1", "b", "1"], ["u1", "c", "2"],
        ["u2", "c", "0"], ["u2", "a", "1"],
        ["u3", "b", "0"],
    ]
    assert result["path"] == str(tmp_path / "out" / "data" / "data.inter")
    assert {k: result[k] for k in ("users", "items", "interactions")} == {
        "users": 3, "items": 3, "interactions": 6,
    }


def test_seq_numeric_users_sort_as_numbers_and_keep_item_order(tmp_path):
    text = "10 5 4\r\n9 1\r\n2 7 7 3\r\n"  # CRLF line endings, a repeated item
    result, _, rows = run(tmp_path, text, "seq")
    assert rows == [
        ["2", "7", "0"], ["2", "7", "1"], ["2", "3", "2"],
        ["9", "1", "0"],
        ["10", "5", "0"], ["10", "4", "1"],
    ]
    assert (result["users"], result["items"], result["interactions"]) == (3, 5, 6)


def test_seq_user_without_items_is_skipped_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_attn.data.convert"):
        result, _, rows = run(tmp_path, "1 a\n2\n3 b c\n4\n", "seq")
    assert [r[0] for r in rows] == ["1", "3", "3"]
    assert result["users"] == 2
    assert "skipped 2 line(s) with a user but no items (first: line 2)" in caplog.text


def test_movielens_format(tmp_path):
    text = "2::20::5::300\n1::10::3::200\n\n1::11::4::100\n1::12::2.5::200\n"
    result, header, rows = run(tmp_path, text, "movielens")
    assert header == RATED_HEADER
    assert rows == [
        ["1", "11", "4", "100"],
        ["1", "10", "3", "200"],  # ties keep the input order
        ["1", "12", "2.5", "200"],
        ["2", "20", "5", "300"],
    ]
    assert (result["users"], result["items"], result["interactions"]) == (2, 4, 4)


def test_csv_without_header_is_amazon_order(tmp_path):
    text = ("A2XYZ,0205616461,5.0,1369699200\n"
            "A1ABC,B00001,3.0,1369699300\n"
            "A1ABC,0205616461,4.0,1369699100\n")
    result, header, rows = run(tmp_path, text, "csv")
    assert header == RATED_HEADER
    assert rows == [
        ["A1ABC", "0205616461", "4.0", "1369699100"],
        ["A1ABC", "B00001", "3.0", "1369699300"],
        ["A2XYZ", "0205616461", "5.0", "1369699200"],
    ]
    assert (result["users"], result["items"], result["interactions"]) == (2, 2, 3)


@pytest.mark.parametrize("header_line", [
    "reviewerID,asin,overall,unixReviewTime,summary",
    "userId,movieId,rating,timestamp,summary",
    "user_id:token,item_id:token,rating:float,timestamp:float,summary",
])
def test_csv_header_columns_found_by_name(tmp_path, header_line):
    # columns reordered: the header decides, extra columns are ignored
    names = header_line.split(",")
    order = [3, 4, 1, 0, 2]
    lines = [",".join(names[i] for i in order)]
    for user, item, rating, time, summary in [
        ("u1", "i1", "5", "20", '"good, really"'),
        ("u1", "i2", "4", "10", "fine"),
        ("u0", "i1", "1", "30", ""),
    ]:
        fields = [user, item, rating, time, summary]
        lines.append(",".join(fields[i] for i in order))
    result, header, rows = run(tmp_path, "\n".join(lines) + "\n", "csv", header=True)
    assert header == RATED_HEADER
    assert rows == [["u0", "i1", "1", "30"], ["u1", "i2", "4", "10"], ["u1", "i1", "5", "20"]]
    assert result["interactions"] == 3


def test_csv_header_without_rating_column(tmp_path):
    text = "\ufeffuser,item,time\nb,x,2\na,y,1\n"  # with a byte order mark
    result, header, rows = run(tmp_path, text, "csv", header=True)
    assert header == SEQ_HEADER
    assert rows == [["a", "y", "1"], ["b", "x", "2"]]
    with pytest.raises(DataError, match="needs a rating column"):
        run(tmp_path, text, "csv", header=True, min_rating=3, force=True)


def test_whitespace_around_fields_is_stripped(tmp_path):
    _, _, rows = run(tmp_path, " u1 , i1 , 4 , 10 \n", "csv")
    assert rows == [["u1", "i1", "4", "10"]]


# ---------------------------------------------------------------- filtering


def test_k_core_repeats_until_stable(tmp_path):
    # One pass (users, then items) removes u4, then item c, which leaves u3 with one
    # interaction; only a second round removes u3.
    text = "u1 a b\nu2 a b\nu3 a c\nu4 c\n"
    result, _, rows = run(tmp_path, text, "seq", user_core=2, item_core=2)
    assert rows == [["u1", "a", "0"], ["u1", "b", "1"], ["u2", "a", "0"], ["u2", "b", "1"]]
    assert (result["users"], result["items"], result["interactions"]) == (2, 2, 4)


def test_item_core_alone_keeps_the_positions(tmp_path):
    text = "u1 a x b\nu2 a b y\n"
    result, _, rows = run(tmp_path, text, "seq", item_core=2)
    # positions are those of the input line: RecBole only needs their order
    assert rows == [["u1", "a", "0"], ["u1", "b", "2"], ["u2", "a", "0"], ["u2", "b", "1"]]
    assert (result["users"], result["items"], result["interactions"]) == (2, 2, 4)


def test_user_core_alone(tmp_path):
    result, _, rows = run(tmp_path, "u1 a b\nu2 a\nu3 c d e\n", "seq", user_core=2)
    assert sorted({r[0] for r in rows}) == ["u1", "u3"]
    assert (result["users"], result["items"], result["interactions"]) == (2, 5, 5)


def test_min_rating(tmp_path):
    text = "1::10::5::1\n1::11::3.5::2\n1::12::4::3\n2::10::1::1\n"
    result, _, rows = run(tmp_path, text, "movielens", min_rating=4)
    assert rows == [["1", "10", "5", "1"], ["1", "12", "4", "3"]]
    assert (result["users"], result["items"], result["interactions"]) == (1, 2, 2)


def test_min_rating_then_core(tmp_path):
    # the rating filter runs first, so u2 drops below the user core
    text = "u1,a,5,1\nu1,b,5,2\nu2,a,5,1\nu2,b,1,2\n"
    result, _, rows = run(tmp_path, text, "csv", min_rating=3, user_core=2)
    assert [r[0] for r in rows] == ["u1", "u1"]
    assert result["users"] == 1


def test_everything_filtered_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no interactions left after filtering"):
        run(tmp_path, "u1 a\nu2 b\n", "seq", item_core=2)
    assert not (tmp_path / "out" / "data" / "data.inter").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"min_rating": 3}, "seq format has none"),
    ({"user_core": 0}, "--user-core must be a positive integer"),
    ({"item_core": -1}, "--item-core must be a positive integer"),
    ({"item_core": 2.5}, "--item-core must be a positive integer"),
    ({"header": True}, "--header only applies to --format csv"),
])
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        run(tmp_path, "u1 a\n", "seq", **kwargs)


@pytest.mark.parametrize("name", ["", "a/b", "..", "x y", "../up"])
def test_bad_names(tmp_path, name):
    path = write(tmp_path / "in.txt", "u1 a\n")
    with pytest.raises(DataError, match="dataset name"):
        convert(path, name, "seq", output_dir=tmp_path)


# ---------------------------------------------------------------- malformed input

MALFORMED = [
    ("movielens", "1::2::3::4\n1::2::3\n", {}, 2, "expected 4 fields"),
    ("movielens", "1::2::3::4\n\n1::2::x::5\n", {}, 3, "rating 'x' is not a number"),
    ("movielens", "1::2::3::4\n1::2::3::2021-01-01\n", {}, 2,
     "timestamp '2021-01-01' is not a number"),
    ("movielens", "1::2::3::4\n1::2::nan::5\n", {}, 2, "rating 'nan' is not a number"),
    ("movielens", "1::2::3::1e999\n", {}, 1, "is out of range"),
    ("csv", "u,i,5,1\nu,i,5\n", {}, 2, "expected 4 comma-separated fields"),
    ("csv", "user_id,item_id,rating,timestamp\nu,i,5,1\n", {}, 1, "pass --header"),
    ("csv", "user,item,rating,timestamp\nu,i,5,1\n\nuser,item,rating,timestamp\nv,i,4,2\n",
     {"header": True}, 4, "repeats the header line"),
    ("csv", "userId,movieId,rating,timestamp\nu,i,5,1\nuser_id,item_id,rating,timestamp\n",
     {"header": True}, 3, "repeats a header line in the middle"),
    ("csv", "u,i,5,1\nu,i,5,1,9\n", {}, 2, "expected 4 comma-separated fields"),
    ("csv", "user,product,rating,timestamp\nu,i,5,1\n", {"header": True}, 1, "has no item column"),
    ("csv", "user,userId,item,timestamp\n", {"header": True}, 1, "both name the user column"),
    ("csv", "u,i,5,1\nNA,i,5,2\n", {}, 2, "would be read as a missing value"),
    ("csv", 'u,i,5,1\n,i,5,2\n', {}, 2, "user id '' is empty"),
    ("csv", 'u,"a""b",5,1\n', {}, 1, "contains a double quote"),
    ("csv", 'u,i,5,1\nv,"multi\nline",5,1\n', {}, 2, "line break"),
    ("seq", "1 a b\n2 c\n1 d\n", {}, 3, "already has a line (line 1)"),
    ("seq", "1 a null\n", {}, 1, "item id 'null' would be read as a missing value"),
]


@pytest.mark.parametrize("fmt, text, kwargs, line, message", MALFORMED)
def test_malformed_input_names_file_and_line(tmp_path, fmt, text, kwargs, line, message):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError) as info:
        convert(path, "bad", fmt, output_dir=tmp_path / "out", **kwargs)
    assert str(info.value).startswith(f"{path}: line {line}")
    assert message in str(info.value)
    assert not (tmp_path / "out" / "bad").exists()


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1 a\n2 b\n3 \xff\n")
    with pytest.raises(DataError, match=r"bad.txt: line 3 is not valid UTF-8"):
        convert(path, "bad", "seq", output_dir=tmp_path)


@pytest.mark.parametrize("fmt", ["seq", "movielens", "csv"])
@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file(tmp_path, fmt, text):
    path = write(tmp_path / "empty.txt", text)
    with pytest.raises(DataError, match="empty.txt: no interactions found"):
        convert(path, "e", fmt, output_dir=tmp_path)


def test_header_only_csv(tmp_path):
    path = write(tmp_path / "h.csv", "user,item,rating,timestamp\n")
    with pytest.raises(DataError, match="no interactions found"):
        convert(path, "h", "csv", output_dir=tmp_path, header=True)


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match="input file not found: .*nothere.txt"):
        convert(tmp_path / "nothere.txt", "x", "seq", output_dir=tmp_path)
    with pytest.raises(DataError, match="input file is not a file"):
        convert(tmp_path, "x", "seq", output_dir=tmp_path)


# ---------------------------------------------------------------- overwriting


def test_refuses_to_overwrite_without_force(tmp_path):
    first, _, _ = run(tmp_path, "u1 a b\n", "seq")
    with pytest.raises(DataError) as info:
        run(tmp_path, "u1 c\n", "seq")
    assert first["path"] in str(info.value) and "--force" in str(info.value)
    assert read_inter(first["path"])[1] == [["u1", "a", "0"], ["u1", "b", "1"]]

    second, _, rows = run(tmp_path, "u1 c\n", "seq", force=True)
    assert second["path"] == first["path"]
    assert rows == [["u1", "c", "0"]]
    assert sorted(p.name for p in Path(first["path"]).parent.iterdir()) == ["data.inter"]


# ---------------------------------------------------------------- command line


def test_main_success_prints_counts(tmp_path, capsys):
    path = write(tmp_path / "in.dat", "1::10::5::1\n2::10::3::2\n2::11::4::3\n")
    out_dir = tmp_path / "out"
    argv = ["--input", str(path), "--name", "ml", "--format", "movielens",
            "--output-dir", str(out_dir), "--min-rating", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"wrote {out_dir / 'ml' / 'ml.inter'}", "users: 2", "items: 2",
                   "interactions: 2"]

    assert main(argv) == 2  # exists already
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--force" in err
    assert main(argv + ["--force"]) == 0


def test_main_malformed_returns_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path / "in.dat", "1::10::5::1\n1::10::five::2\n")
    code = main(["--input", str(path), "--name", "ml", "--format", "movielens",
                 "--output-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err == f"error: {path}: line 2: rating 'five' is not a number\n"


def test_main_usage_error_returns_2(capsys):
    assert main(["--name", "x"]) == 2
    assert "--input" in capsys.readouterr().err


def test_module_runs_as_script(tmp_path):
    bad = write(tmp_path / "bad.csv", "u,i,5,1\nu,i,5\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_attn.data.convert", "--input", str(bad),
         "--name", "bad", "--format", "csv", "--output-dir", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == f"error: {bad}: line 2: expected 4 comma-separated fields " \
                          f"(user,item,rating,timestamp), found 3\n"


# ---------------------------------------------------------------- RecBole reads the result


def test_output_loads_in_recbole(tmp_path, monkeypatch):
    pytest.importorskip("recbole")
    from recbole.config import Config
    from recbole.data import create_dataset

    path = write(tmp_path / "in.txt", "u1 a b c\nu2 b c\nu3 c d a e\n")
    out_dir = tmp_path / "atomic"
    result = convert(path, "tiny", "seq", output_dir=out_dir)
    monkeypatch.setattr(sys, "argv", ["x"])  # Config parses --key=value from sys.argv
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # Config sets it from gpu_id
    config = Config(model="GRU4Rec", dataset="tiny", config_dict={
        "data_path": str(out_dir),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "gpu_id": "",
        "use_gpu": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "train_neg_sample_args": None,
        "show_progress": False,
    })
    dataset = create_dataset(config)
    assert dataset.user_num - 1 == result["users"] == 3  # RecBole counts the padding id
    assert dataset.item_num - 1 == result["items"] == 5
    assert dataset.inter_num == result["interactions"] == 9
    # RecBole keeps the order of each user's items
    uid = dataset.field2id_token["user_id"].tolist().index("u3")
    inter = dataset.inter_feat
    items = inter["item_id"][inter["user_id"] == uid].tolist()
    tokens = dataset.field2id_token["item_id"]
    assert [tokens[i] for i in items] == ["c", "d", "a", "e"]


# ---------------------------------------------------------------- fuzz

SAFE = "abcxyz0123456789"
GARBAGE = st.text(alphabet=SAFE + ' ,:."\t\r-eNAé', max_size=12)
ID = st.text(alphabet=SAFE, min_size=1, max_size=3)


def _lines_to_bytes(lines):
    return b"".join(line if isinstance(line, bytes) else line.encode("utf-8") + b"\n"
                    for line in lines)


def _convert_or_error(data, fmt, **kwargs):
    """Convert bytes; return (result, per-user rows) or (None, None) on DataError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.txt"
        path.write_bytes(data)
        try:
            result = convert(path, "fuzz", fmt, output_dir=Path(tmp) / "out", **kwargs)
        except DataError:
            return None, None
        header, rows = read_inter(result["path"])
    by_user = defaultdict(list)
    for row in rows:
        by_user[row[0]].append(row[1:])
    assert len(by_user) == result["users"]
    assert list(by_user) == sorted(by_user, key=_user_key(list(by_user))), "grouped, sorted users"
    return (result, header), dict(by_user)


def _user_key(users):
    if all(u.isascii() and u.isdigit() for u in users):
        return lambda u: (int(u), u)
    return lambda u: u


def _check_counts(result, expected):
    items = {row[0] for rows in expected.values() for row in rows}
    assert result["users"] == len(expected)
    assert result["items"] == len(items)
    assert result["interactions"] == sum(map(len, expected.values()))


seq_line = st.one_of(
    st.tuples(ID, st.lists(ID, max_size=5)).map(lambda t: " ".join((t[0], *t[1]))),
    st.sampled_from(["", "  ", "\t"]),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(seq_line, max_size=8), st.lists(st.one_of(GARBAGE, st.just(b"\xff\n")),
                                                  max_size=2), st.data())
def test_fuzz_seq(lines, garbage, data):
    for g in garbage:
        lines.insert(data.draw(st.integers(0, len(lines))), g)
    raw = _lines_to_bytes(lines)
    out, by_user = _convert_or_error(raw, "seq")

    # straightforward recount; decides whether the file is clean
    clean = not garbage
    expected = {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert out is None
        return
    for line in text.split("\n"):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] in expected:
            clean = False  # a user on two lines
        if len(tokens) > 1:
            expected.setdefault(tokens[0], [[item, str(i)] for i, item in enumerate(tokens[1:])])
        else:
            expected.setdefault(tokens[0], None)
    expected = {u: rows for u, rows in expected.items() if rows}
    clean = clean and bool(expected)
    if out is None:
        assert not clean, "a clean file must convert"
        return
    result, header = out
    assert header == SEQ_HEADER
    assert by_user == expected
    _check_counts(result, expected)


csv_row = st.tuples(ID, ID, st.sampled_from(["1", "2.5", "4.0", "5"]),
                    st.integers(0, 30).map(str)).map(",".join)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(csv_row, st.sampled_from(["", " "])), max_size=10),
       st.lists(st.one_of(GARBAGE, st.just(b"\xff\n"), st.just("user,item,rating,timestamp")),
                max_size=2),
       st.data())
def test_fuzz_csv(lines, garbage, data):
    for g in garbage:
        lines.insert(data.draw(st.integers(0, len(lines))), g)
    raw = _lines_to_bytes(lines)
    out, by_user = _convert_or_error(raw, "csv")

    clean = not garbage
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert out is None
        return
    expected = defaultdict(list)
    try:
        for fields in csv.reader(line + "\n" for line in text.split("\n")[:-1]):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != 4:
                assert out is None
                return
            user, item, rating, time = (f.strip() for f in fields)
            expected[user].append((float(time), [item, rating, time]))
    except (csv.Error, ValueError):
        assert out is None
        return
    expected = {u: [row for _, row in sorted(rows, key=lambda r: r[0])]  # stable: ties keep order
                for u, rows in expected.items()}
    clean = clean and bool(expected)
    if out is None:
        assert not clean, "a clean file must convert"
        return
    result, header = out
    assert header == RATED_HEADER
    assert by_user == expected
    _check_counts(result, expected)


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("relative, name, kwargs, counts", [
    ("beauty/Beauty.txt", "beauty", {}, (22363, 12101, 198502)),
    ("ml-1m/ml-1m_sequences_from_dataset_pkl.txt", "ml-1m", {"item_core": 5},
     (6040, 3416, 999611)),
])
def test_real_data_counts(tmp_path, relative, name, kwargs, counts):
    path = RAW / relative
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    result = convert(path, name, "seq", output_dir=tmp_path, **kwargs)
    assert (result["users"], result["items"], result["interactions"]) == counts
