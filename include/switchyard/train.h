/* train: `switchyard train`, fits classifier weights (see classifier.h) from labelled routing
 * JSONL (shared/data/routing format: id, set, turns, strong, weak, needs_strong) and reports
 * how the model routes rows it was not trained on. Offline tool: reads and writes files. */
#ifndef SY_TRAIN_H
#define SY_TRAIN_H

#include <stddef.h>
#include <stdint.h>

/* switchyard train --data A.jsonl[,B.jsonl] --out FILE [--seed N] [--holdout F] [--epochs N]
 *                  [--l2 X] [--l2-hashed X] [--l2-mc X] [--hash-bits B]
 *                  [--label gain|needs_strong|gain_weighted] [--aux A] [--set-weight SET=W,...]
 *                  [--prune X] [--threshold-share S | --threshold T] [--eval-dir DIR]
 *                  [--folds K] [--quiet]
 * (--help lists what each does.)
 * <argv>[0] is "train". Returns a process exit status: 0 on success, 1 on a data or I/O error,
 * 2 on a usage error. Prints the report on stdout and errors on stderr. Deterministic: the same
 * data and flags write the same weights file byte for byte. */
int sy_train_main(int argc, char **argv);

/* The stable split key of a row: a uniform value in [0,1) from FNV-1a 64 of "<seed>:<salt>:<id>".
 * Rows with key < holdout are held out. Exposed for tests. */
double sy_train_split_key(uint64_t seed, unsigned salt, const char *id);

#endif
