"""mdl_test: a Criterion test binary with memdl's conventions.

Tests run with --verbose: Criterion then logs one [SKIP] line per skipped
or disabled test (its Synthesis line leaves them out), which
scripts/test.sh counts."""

def mdl_test(name, srcs, deps = [], data = [], size = "small", args = [], tags = [], copts = [], linkopts = []):
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps + ["//common:error", "//tests:leakcheck"],
        data = data + ["//tests:lsan.supp"],
        size = size,
        args = ["--verbose"] + args,
        tags = tags,
        copts = copts,
        linkopts = linkopts + ["-lcriterion"],
    )
