"""Loads one BCC program file with BCC's own Python front end and keeps it
attached until SIGINT: for programs the tool itself will not run because
they print nothing (bench/states_aggregate.bpf.c). Prints the transition
count of that program's `transitions` map on exit, so the caller can check
it counted. Run with Debian's /usr/bin/python3 (python3-bpfcc)."""
import signal
import sys

from bcc import BPF

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # for sigwait
bpf = BPF(src_file=sys.argv[1])
print("ready", file=sys.stderr, flush=True)
signal.sigwait({signal.SIGINT, signal.SIGTERM})
total = sum(sum(v) for v in bpf["transitions"].values())
print(f"transitions counted: {total}", file=sys.stderr, flush=True)
