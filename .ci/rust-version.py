#!/usr/bin/env python3
"""Checks that each workspace crate's declared `rust-version` is not below what its locked
dependencies declare (cargo refuses to build a dependency whose `rust-version` is above the
compiler's, so a lower declaration would be false).

What is and is not verified about the declared version:
- verified here: every crate in the dependency closure (normal, build and dev) of each member,
  as `Cargo.lock` pins it, declares a `rust-version` at most the member's;
- verified by clippy (`incompatible_msrv`, on by default, denied in `.ci/run`): our code calls
  no standard library item stabilised after the declared version;
- not verified: language features and compiler behaviour newer than the declared version. Only
  the toolchain of `rust-toolchain.toml` is installed, so nothing compiles with the declared one.

Prints one line per member; exits 1 if a member declares less than its dependencies need.
"""

import json
import subprocess
import sys


def version_key(version):
    """`1.88` and `1.88.0` as comparable tuples; no `rust-version` counts as 0."""
    if not version:
        return (0,)
    parts = [int(p) for p in version.split(".")]
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def main():
    host = next(
        line.split(": ", 1)[1]
        for line in subprocess.run(
            ["rustc", "-vV"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if line.startswith("host: ")
    )
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    deps = {node["id"]: node["dependencies"] for node in metadata["resolve"]["nodes"]}
    members = set(metadata["workspace_members"])

    failed = False
    for member in sorted(members, key=lambda m: packages[m]["name"]):
        declared = packages[member]["rust_version"]
        seen = set()
        stack = list(deps[member])
        while stack:
            dep = stack.pop()
            if dep in seen:
                continue
            seen.add(dep)
            stack.extend(deps[dep])
        external = [packages[d] for d in seen if d not in members]
        needed = max((version_key(p["rust_version"]) for p in external), default=(0,))
        highest = sorted(
            f"{p['name']} {p['version']}"
            for p in external
            if version_key(p["rust_version"]) == needed
        )
        name = packages[member]["name"]
        need = ".".join(map(str, needed))
        if declared is None or version_key(declared) < needed:
            failed = True
            print(
                f"{name}: rust-version {declared} is below {need}, "
                f"which its dependencies need ({', '.join(highest)})"
            )
        else:
            print(
                f"{name}: rust-version {declared}; its {len(external)} dependencies need "
                f"at most {need} ({', '.join(highest[:3])}{', ...' if len(highest) > 3 else ''})"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
