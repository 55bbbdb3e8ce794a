"""The order command: finds our users in a renumbered, reordered copy of a sequence file and
counts the users whose held-out items differ."""

import random

from recbole_attn.bench.__main__ import main as bench_main
from recbole_attn.bench.order import compare, drop_rare_items, read_sequences

N_USERS, N_ITEMS, LENGTH = 40, 60, 18


def _ours(seed=0):
    rng = random.Random(seed)
    return {str(100 + u): [str(1000 + i) for i in rng.sample(range(N_ITEMS), LENGTH + rng.randrange(6))]
            for u in range(N_USERS)}


def _renumbered(ours, swap_last, swap_middle, seed=1):
    """Their copy: users in another order, users and items numbered from 1 by first appearance,
    the last two items swapped for the users in ``swap_last``, two middle ones for ``swap_middle``."""
    rng = random.Random(seed)
    order = list(ours)
    rng.shuffle(order)
    item_ids, theirs, their_user = {}, {}, {}
    for k, u in enumerate(order, 1):
        seq = list(ours[u])
        if u in swap_last:
            seq[-1], seq[-2] = seq[-2], seq[-1]
        if u in swap_middle:
            seq[5], seq[6] = seq[6], seq[5]
        theirs[str(k)] = [item_ids.setdefault(i, str(len(item_ids) + 1)) for i in seq]
        their_user[str(k)] = u
    return theirs, their_user


def _write(path, seqs, one_per_line=False):
    if one_per_line:  # the SASRec code's layout: "user item" per interaction
        text = "".join(f"{u} {i}\n" for u, seq in seqs.items() for i in seq)
    else:
        text = "".join(f"{u} {' '.join(seq)}\n" for u, seq in seqs.items())
    path.write_text(text)
    return path


def test_finds_every_user_and_the_users_holding_out_another_item():
    ours = _ours()
    users = list(ours)
    swap_last, swap_middle = set(users[:7]), set(users[10:15])
    unsure = users[20]
    ours[unsure] += ["only-here-1", "only-here-2"]  # two items of this user alone: either can be either
    theirs, truth = _renumbered(ours, swap_last, swap_middle)
    counts, rows = compare(ours, theirs, window=5)
    assert counts["matched"] == N_USERS
    assert {t: u for t, u, *_ in rows} == truth
    verdicts = {u: (test, valid, moved) for _, u, test, valid, moved in rows}
    popularity = {}
    for seq in ours.values():
        for item in seq:
            popularity[item] = popularity.get(item, 0) + 1
    assert counts["other test item identified"] == len(swap_last)
    assert counts["theirs more popular"] == sum(popularity[ours[u][-2]] > popularity[ours[u][-1]] for u in swap_last)
    assert verdicts.pop(unsure) == ("undetermined", "undetermined", False)
    for u in verdicts:
        swapped = u in swap_last
        assert verdicts[u][:2] == (("another", "another") if swapped else ("same", "same")), u
        assert verdicts[u][2] == (swapped or u in swap_middle), u


def test_command_reads_both_layouts_and_a_cut_prefix(tmp_path, capsys):
    ours = _ours()
    theirs, _ = _renumbered(ours, set(list(ours)[:4]), set())
    ours_path = _write(tmp_path / "ours.txt", ours)
    full = _write(tmp_path / "theirs.txt", theirs, one_per_line=True).read_text()
    prefix = tmp_path / "prefix.txt"
    prefix.write_text(full[: len(full) * 3 // 4 - 1])  # cut inside a line, as a partial copy is
    assert read_sequences(tmp_path / "theirs.txt") == theirs
    assert bench_main(["order", "--ours", str(ours_path), "--theirs", str(prefix), "--window", "5"]) == 0
    printed = capsys.readouterr().out
    shown = int(printed.split("Their users: ")[1].split(";")[0])
    matched = int(printed.split("matched to ours: ")[1].split(";")[0])
    assert shown < N_USERS and matched == shown - 1  # the cut last user fits no user of ours
    test_row = next(line for line in printed.splitlines() if line.startswith("| test"))
    assert test_row.split(" | ")[2].startswith("4 ")  # the four users whose last two were swapped


def test_rare_items_are_dropped_once_and_bad_input_is_one_line(tmp_path, capsys):
    seqs = {"1": ["a", "b", "c"], "2": ["a", "b"], "3": ["a"]}
    assert drop_rare_items(seqs, 2) == {"1": ["a", "b"], "2": ["a", "b"], "3": ["a"]}
    assert drop_rare_items(seqs, 3) == {"1": ["a"], "2": ["a"], "3": ["a"]}
    bad = tmp_path / "bad.txt"
    bad.write_text("1 5 6\n7\n")
    assert bench_main(["order", "--ours", str(bad), "--theirs", str(bad)]) == 2
    assert "bad.txt: line 2" in capsys.readouterr().err
    assert bench_main(["order", "--ours", str(tmp_path / "missing.txt"), "--theirs", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("1 5\n2 6\n")  # no user has a validation and a test item
    assert bench_main(["order", "--ours", str(short), "--theirs", str(short)]) == 2
    assert "no user with the two items" in capsys.readouterr().err
