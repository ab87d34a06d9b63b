"""mdl_test: a Criterion test binary with memdl's conventions."""

def mdl_test(name, srcs, deps = [], data = [], size = "small", args = [], tags = [], copts = [], linkopts = []):
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps + ["//common:error", "//tests:leakcheck"],
        data = data + ["//tests:lsan.supp"],
        size = size,
        args = args,
        tags = tags,
        copts = copts,
        linkopts = linkopts + ["-lcriterion"],
    )
