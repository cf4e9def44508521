r"""Instruction counts of the innermost loops of one function in a GCC
assembly listing (``g++ -S``, demangled with ``c++filt``): every loop (a
label and the branch back to it) that contains the given mnemonic and no
smaller such loop, with its instructions counted by mnemonic (directives and
labels excluded). Used for ``benchmarks/results/arm_neon.md``:

    cd torch_geometric_binary/deploy/csrc
    aarch64-linux-gnu-g++ -O2 -march=armv8-a -std=c++17 -S \
        -o /tmp/arm.s test_xnor_kernels.cpp
    c++filt < /tmp/arm.s > /tmp/arm_d.s
    python3 benchmarks/asm_loops.py /tmp/arm_d.s \
        'void tgb::neon::counts8<4>' cnt
"""
import argparse
import collections
import re


def innermost_loops(path: str, function: str, mnemonic: str):
    lines = open(path).read().split('\n')
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(function) and line.endswith(':'))
    end = next(i for i in range(start, len(lines))
               if lines[i].strip().startswith('.size'))
    body = lines[start:end]
    labels = {line[:-1]: i for i, line in enumerate(body)
              if re.match(r'^\.L\w+:$', line)}
    loops = []
    for i, line in enumerate(body):
        tok = line.split()
        if len(tok) >= 2 and tok[0][0] in 'jb' and tok[-1] in labels \
                and labels[tok[-1]] < i:
            a = labels[tok[-1]]
            ins = [x.split()[0] for x in body[a:i + 1]
                   if x.startswith('\t') and not x.strip().startswith('.')]
            if mnemonic in ins:
                loops.append((a, i, ins))
    return [(a, b, ins) for a, b, ins in loops
            if not any(a <= a2 and b2 <= b and (a2, b2) != (a, b)
                       for a2, b2, _ in loops)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('listing')
    p.add_argument('function', help="demangled name up to '(', e.g. "
                   "'void tgb::neon::counts8<4>'")
    p.add_argument('mnemonic', help='an instruction the loop must contain')
    args = p.parse_args()
    for a, b, ins in innermost_loops(args.listing, args.function,
                                     args.mnemonic):
        counts = collections.Counter(ins)
        print(f'{args.function}: loop at lines {a}-{b}: {len(ins)} '
              'instructions: ' + ', '.join(f'{n} {m}'
                                          for m, n in counts.most_common()))


if __name__ == '__main__':
    main()
