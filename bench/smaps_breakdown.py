#!/usr/bin/env python3
"""Where a process's resident memory is, from a copy of /proc/<pid>/smaps (bench/harness.py
--smaps-dir saves them): file-backed text and data per file, the main heap, the second malloc
arena, thread stacks (a rw mapping right after a 4 KiB guard page), and other anonymous mappings.

  bench/smaps_breakdown.py DIR/trousseau.after.smaps [more.smaps ...]
"""
from __future__ import annotations

import os
import re
import sys

HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def parse(path: str) -> list[dict]:
    maps: list[dict] = []
    with open(path) as f:
        for line in f:
            m = HEAD.match(line)
            if m:
                maps.append({"start": int(m[1], 16), "end": int(m[2], 16), "perm": m[3],
                             "name": m[4].strip(), "Rss": 0, "Anonymous": 0})
            elif maps and ":" in line:
                k, _, v = line.partition(":")
                if k in ("Rss", "Anonymous"):
                    maps[-1][k] = int(v.split()[0])
    return maps


def classify(maps: list[dict]) -> dict[str, list[int]]:
    """category -> [rss KiB, mappings]"""
    out: dict[str, list[int]] = {}

    def add(cat: str, kib: int) -> None:
        e = out.setdefault(cat, [0, 0])
        e[0] += kib
        e[1] += 1

    for i, m in enumerate(maps):
        name = m["name"]
        if name.startswith("/"):
            add(f"file {os.path.basename(name)}", m["Rss"])
        elif name in ("[heap]", "[stack]", "[vdso]", "[vvar]", "[vsyscall]"):
            add(name, m["Rss"])
        elif m["perm"].startswith("---"):
            continue
        else:
            prev = maps[i - 1] if i else None
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            size = (m["end"] - m["start"]) // 1024
            if (prev and prev["perm"].startswith("---") and prev["end"] == m["start"]
                    and (prev["end"] - prev["start"]) // 1024 <= 64 and not prev["name"]):
                add(f"thread stack ({size // 1024} MiB mapping)", m["Rss"])
            elif (nxt and nxt["perm"].startswith("---") and nxt["start"] == m["end"]
                  and size + (nxt["end"] - nxt["start"]) // 1024 == 64 * 1024):
                add("malloc arena (non-main)", m["Rss"])
            elif size == 64 * 1024:
                add("malloc arena (non-main)", m["Rss"])
            else:
                add("other anonymous", m["Rss"])
    return out


def main() -> int:
    for path in sys.argv[1:]:
        maps = parse(path)
        cats = classify(maps)
        total = sum(v[0] for v in cats.values())
        anon = sum(m["Anonymous"] for m in maps)
        print(f"{path}: Rss {total / 1024:.1f} MiB, anonymous {anon / 1024:.1f} MiB")
        files = sum(v[0] for k, v in cats.items() if k.startswith("file "))
        print(f"  {'file-backed (all)':<40} {files / 1024:7.2f} MiB")
        for k, (kib, n) in sorted(cats.items(), key=lambda kv: -kv[1][0]):
            if kib >= 64:
                print(f"  {k:<40} {kib / 1024:7.2f} MiB  ({n} mappings)")
        stacks = [m["Rss"] for i, m in enumerate(maps) if i and not m["name"]
                  and not m["perm"].startswith("---") and maps[i - 1]["perm"].startswith("---")
                  and maps[i - 1]["end"] == m["start"] and not maps[i - 1]["name"]
                  and (maps[i - 1]["end"] - maps[i - 1]["start"]) // 1024 <= 64]
        if stacks:
            print(f"  thread stacks' resident KiB: {sorted(stacks, reverse=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
