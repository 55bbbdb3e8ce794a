"""Compare two sequence files that hold the same interactions under other ids and orders.

The papers' ML-1M file (``data/ml-1m.txt`` of the SASRec and FPARec code) numbers users and items
its own way, and orders the ratings a user made within the same second its own way; ours (see
``../shared/data/SOURCES.md``) keeps the original MovieLens ids. Leave-one-out holds out each
user's last item for test and the one before for validation, so an order that differs at the end
of a sequence is a different test set. This command finds each of their users among ours and
counts the users whose test or validation item is another one::

    python -m recbole_attn.bench order --ours ../shared/data/raw/ml-1m/ml-1m_sequences_from_dataset_pkl.txt \\
        --theirs ml-1m.txt --min-item-count 5

Both files hold ``user item item ...`` lines; a user may also come back on later lines (the
one-interaction-per-line ``user item`` layout of the SASRec code), whose items are appended in
file order. ``--min-item-count`` drops our items with fewer interactions, once, as the papers'
preprocessing did. ``--theirs`` may be a prefix of the file: an incomplete last line simply
matches no user.

How users and items are matched, without any shared id:

1. Their users are taken in file order. A user is matched to the one of ours with the same number
   of distinct items that shares as many items with each of the last 30 matched users as theirs
   does with its counterpart (at least 90% of those counts equal, and no other user of ours as
   good); these counts need no item ids and no order. The users this leaves are tried again
   against the matched users nearest to them in the file. The first user is tried against each of
   ours of its length, keeping the start under which the next users fit best.
2. Item candidates: a their item can be only one of our items that sits within ``--window``
   positions of it in every matched user holding it, and that lies in exactly those users. An item
   left with one candidate is identified, and that item is removed from the candidates of the others.

A user's test item is then *the same* when their last item has our last item as its only
candidate, *another one* when our last item is not among its candidates, and *undetermined*
otherwise (items seen in few users of a prefix); likewise the validation item. Where the test
item is another one and identified, the command also counts how often theirs has more
interactions than ours: popular items are ranked high by every model, so a test set that holds
out more popular items is an easier one.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from recbole_attn.errors import DataError, RecboleAttnError

BOOTSTRAP_USERS = 10  # users followed to choose the first user's match
RECENT_USERS = 30  # matched users whose shared-item counts recognise the next one


def read_sequences(path):
    """``{user: [item, ...]}`` in file order; a user on several lines gets them appended."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    seqs = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataError(f"{path}: line {lineno}: expected 'user item ...', got {line.strip()!r}")
        seqs.setdefault(tokens[0], []).extend(tokens[1:])
    if not seqs:
        raise DataError(f"{path}: no sequences")
    return seqs


def item_counts(seqs):
    """``{item: number of interactions}``."""
    counts = defaultdict(int)
    for seq in seqs.values():
        for item in seq:
            counts[item] += 1
    return counts


def drop_rare_items(seqs, min_count):
    """Drop items with fewer than ``min_count`` interactions (one pass), and emptied users."""
    counts = item_counts(seqs)
    kept = {user: [i for i in seq if counts[i] >= min_count] for user, seq in seqs.items()}
    return {user: seq for user, seq in kept.items() if seq}


def _fit(t, ref, our_sets, their_sets, by_length, used):
    """(our user, number of fitting counts) for their user ``t`` against the matched pairs ``ref``,
    or None: a user of ours fits when it shares as many items with each matched user of ours as
    ``t`` shares with the counterpart; counts of shared items need no item ids and no order."""
    want = [len(their_sets[t] & their_sets[r]) for r, _ in ref]
    if not any(want):
        return None  # shares no item with them: nothing to recognise it by
    ranked = sorted(((sum(w == len(our_sets[u] & our_sets[v]) for w, (_, v) in zip(want, ref)), u)
                     for u in by_length.get(len(their_sets[t]), ()) if u not in used), reverse=True)
    if not ranked or ranked[0][0] * 10 < len(ref) * 9 or (len(ranked) > 1 and ranked[1][0] == ranked[0][0]):
        return None  # no user of ours fits (nearly) every count, or two fit equally
    return ranked[0][1], ranked[0][0]


def _follow(our_sets, their_sets, order, by_length, seed):
    """Match ``order``'s users from ``seed`` = (their user, our user): one pass in file order
    against the last ``RECENT_USERS`` matches, then the users it left against the matches nearest
    to them in the file. Returns (user matches, number of fitting counts)."""
    users, used, score = {seed[0]: seed[1]}, {seed[1]}, 0
    for t in order:
        if t in users:
            continue
        found = _fit(t, list(users.items())[-RECENT_USERS:], our_sets, their_sets, by_length, used)
        if found:
            users[t] = found[0]
            used.add(found[0])
            score += found[1]
    position = {t: k for k, t in enumerate(order)}
    for t in order:
        if t in users:
            continue
        nearest = sorted(users.items(), key=lambda pair: abs(position[pair[0]] - position[t]))[:RECENT_USERS]
        found = _fit(t, nearest, our_sets, their_sets, by_length, used)
        if found:
            users[t] = found[0]
            used.add(found[0])
            score += found[1]
    return {t: users[t] for t in order if t in users}, score


def match_users(ours, theirs):
    """Their users -> ours (dict) for the users that can be recognised (see the module's doc)."""
    our_sets = {u: set(seq) for u, seq in ours.items()}
    their_sets = {t: set(seq) for t, seq in theirs.items()}
    by_length = defaultdict(list)
    for user, items in our_sets.items():
        by_length[len(items)].append(user)
    order = list(theirs)
    first = order[0]
    starts = by_length.get(len(their_sets[first]), [])
    if not starts:
        raise DataError(f"their first user ({len(their_sets[first])} items) has no user of ours with as many items")
    scored = [(_follow(our_sets, their_sets, order[:BOOTSTRAP_USERS], by_length, (first, u))[1], u) for u in starts]
    best_start = max(scored)[1]
    return _follow(our_sets, their_sets, order, by_length, (first, best_start))[0]


def item_candidates(ours, theirs, users, window):
    """For each of their items, the set of our items it can be (step 2 of the module's doc)."""
    holders = defaultdict(set)  # their item -> their users (matched) holding it
    our_holders = defaultdict(set)  # our item -> the same users, found through ours
    for t, u in users.items():
        for i in theirs[t]:
            holders[i].add(t)
        for x in ours[u]:
            our_holders[x].add(t)
    # first position of each item in each matched user (a list's index() per item is quadratic)
    position = {t: {i: p for p, i in reversed(list(enumerate(theirs[t])))} for t in users}
    candidates = {}
    for i, ts in holders.items():
        cand = None
        for t in ts:
            our_seq, p = ours[users[t]], position[t][i]
            near = set(our_seq[max(0, p - window):p + window + 1])
            cand = near if cand is None else cand & near
        candidates[i] = {x for x in cand if our_holders[x] == ts}
    changed = True
    while changed:
        changed = False
        fixed = {next(iter(c)) for c in candidates.values() if len(c) == 1}
        for i, c in candidates.items():
            if len(c) > 1 and c & fixed:
                candidates[i] = c - fixed
                changed = True
    return candidates


def _verdict(candidates, our_item):
    if candidates == {our_item}:
        return "same"
    return "another" if our_item not in candidates else "undetermined"


def compare(ours, theirs, window):
    """Counts of the comparison and the per-user rows ``(their user, our user, test verdict,
    validation verdict, whether any item of the user is in another place)``."""
    users = match_users(ours, theirs)
    candidates = item_candidates(ours, theirs, users, window)
    popularity = item_counts(ours)
    rows, more_popular = [], []
    for t, u in users.items():
        seq, our_seq = theirs[t], ours[u]
        if len(candidates[seq[-1]]) == 1 and our_seq[-1] not in candidates[seq[-1]]:
            more_popular.append(popularity[next(iter(candidates[seq[-1]]))] > popularity[our_seq[-1]])
        moved = any(x not in candidates[i] for i, x in zip(seq, our_seq))
        rows.append((t, u, _verdict(candidates[seq[-1]], our_seq[-1]), _verdict(candidates[seq[-2]], our_seq[-2]),
                     moved))
    return {
        "their users": len(theirs),
        "matched": len(users),
        "no candidate": sum(1 for c in candidates.values() if not c),
        "other test item identified": len(more_popular),
        "theirs more popular": sum(more_popular),
    }, rows


def render(counts, rows, window, show):
    n = len(rows)

    def share(k):
        return f"{k} ({100 * k / n:.1f}%)" if n else "0"

    lines = [
        f"Their users: {counts['their users']}; matched to ours: {counts['matched']}; "
        f"window: {window} positions; their items with no candidate: {counts['no candidate']}",
        "",
        "| Item held out | Same | Another one | Undetermined |",
        "|---|---|---|---|",
    ]
    for label, k in (("test (last)", 2), ("validation (second to last)", 3)):
        lines.append(f"| {label} | {share(sum(r[k] == 'same' for r in rows))} "
                     f"| {share(sum(r[k] == 'another' for r in rows))} "
                     f"| {share(sum(r[k] == 'undetermined' for r in rows))} |")
    lines.append("")
    lines.append(f"Users with at least one item in another place than ours: {share(sum(r[4] for r in rows))}")
    k = counts["other test item identified"]
    lines.append(f"Users whose other test item is identified: {k}; in {counts['theirs more popular']} of them it has "
                 f"more interactions than our test item (the popular items are the easier ones to rank high)")
    if show:
        lines += ["", "| Their user | Our user | Test item | Validation item |", "|---|---|---|---|"]
        lines += [f"| {t} | {u} | {test} | {valid} |" for t, u, test, valid, _ in rows[:show]]
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m recbole_attn.bench order",
                                description="Compare two sequence files of the same interactions: "
                                            "which users hold out another test or validation item.")
    p.add_argument("--ours", required=True, help="our sequence file (user item item ...)")
    p.add_argument("--theirs", required=True, help="their sequence file, or a prefix of it")
    p.add_argument("--min-item-count", type=int, default=1,
                   help="drop our items with fewer interactions first (the papers' ML-1M: 5)")
    p.add_argument("--window", type=int, default=60,
                   help="how far (positions) an item may move between the two orders; an item with no "
                        "candidate in the output means it moved further, or the files differ (default 60)")
    p.add_argument("--show", type=int, default=0, help="list the first N matched users")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.min_item_count < 1 or args.window < 1 or args.show < 0:
            raise DataError("--min-item-count and --window must be >= 1, --show >= 0")
        ours = drop_rare_items(read_sequences(args.ours), args.min_item_count)
        theirs = {t: seq for t, seq in read_sequences(args.theirs).items() if len(seq) >= 2}
        if not theirs:
            raise DataError(f"{args.theirs}: no user with the two items that leave-one-out holds out")
        counts, rows = compare(ours, theirs, args.window)
    except RecboleAttnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(counts, rows, args.window, args.show))
    return 0


if __name__ == "__main__":
    sys.exit(main())
