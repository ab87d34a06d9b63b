"""Finds a local CUDA toolkit, cuDNN and cuBLAS for gpu/ (no download).

Writes the repository @local_cuda with defs.bzl (CUDA_FOUND, NVCC, CUDA_ARCHS,
CUDA_LIB_DIRS, CUDA_REASON) and a BUILD holding `cuda_headers` (the include
folders, linked into the repository) when everything is found. Without a
toolkit, with MDL_CUDA=0, or when a piece is missing, defs.bzl says
CUDA_FOUND = False with the reason and the BUILD is an empty stub, so the
build succeeds without the GPU plugin.

Bazel 4's path.get_child() rejects arguments with slashes (the server
crashes), so every path here is built as ctx.path(root + "/" + sub).
"""

_DEFAULT_ARCHS = ["80", "90", "100"]

def _p(ctx, root, sub = None):
    return ctx.path(root + "/" + sub if sub else root)

def _exists(ctx, root, sub = None):
    return _p(ctx, root, sub).exists

def _stub(ctx, reason):
    ctx.file("BUILD", "# No CUDA: %s\npackage(default_visibility = [\"//visibility:public\"])\n" % reason)
    ctx.file("defs.bzl", "\n".join([
        "CUDA_FOUND = False",
        "CUDA_REASON = %r" % reason,
        "NVCC = \"\"",
        "CUDA_ARCHS = []",
        "CUDA_LIB_DIRS = []",
        "",
    ]))

def _archs(ctx):
    v = ctx.os.environ.get("MDL_CUDA_ARCHS", "").replace(";", ",").replace(" ", ",")
    out = []
    for a in v.split(","):
        a = a.strip().replace("sm_", "").replace(".", "")
        if a:
            if not a.isdigit():
                fail("MDL_CUDA_ARCHS: \"%s\" is not an SM number (e.g. 80,90)" % a)
            out.append(a)
    return out if out else _DEFAULT_ARCHS

def _local_cuda_impl(ctx):
    env = ctx.os.environ
    if env.get("MDL_CUDA", "1") in ["0", "off", "no", "false"]:
        _stub(ctx, "MDL_CUDA=%s" % env.get("MDL_CUDA"))
        return

    # the toolkit: CUDA_PATH, else CUDA_HOME (either one alone decides), else
    # nvcc on PATH, else /usr/local/cuda
    roots = []
    if env.get("CUDA_PATH"):
        roots = [env["CUDA_PATH"]]
    elif env.get("CUDA_HOME"):
        roots = [env["CUDA_HOME"]]
    else:
        nvcc_on_path = ctx.which("nvcc")
        if nvcc_on_path:
            roots.append(str(nvcc_on_path.dirname.dirname))
        roots.append("/usr/local/cuda")
    root = None
    tried = []
    for r in roots:
        if not r:
            continue
        tried.append(r)
        if _exists(ctx, r, "bin/nvcc") and _exists(ctx, r, "include/cuda_runtime.h"):
            root = str(_p(ctx, r).realpath)
            break
    if not root:
        _stub(ctx, "no nvcc with include/cuda_runtime.h under %s" % (", ".join(tried) or "(nothing to try)"))
        return

    # cuDNN: CUDNN_PATH, the toolkit, Debian-style system folders
    cudnn_roots = [env.get("CUDNN_PATH", ""), root, "/usr"]
    inc_dirs = [root + "/include"]
    lib_dirs = []
    for sub in ["lib64", "lib", "targets/x86_64-linux/lib"]:
        if _exists(ctx, root, sub + "/libcublas.so") and _exists(ctx, root, sub + "/libcudart_static.a"):
            lib_dirs.append(root + "/" + sub)
            break
    if not lib_dirs:
        _stub(ctx, "%s has no lib64/libcublas.so with libcudart_static.a" % root)
        return
    cudnn_inc = None
    cudnn_lib = None
    for r in cudnn_roots:
        if not r:
            continue
        for sub in ["include", "include/x86_64-linux-gnu"]:
            if not cudnn_inc and _exists(ctx, r, sub + "/cudnn.h"):
                cudnn_inc = r + "/" + sub
        for sub in ["lib64", "lib", "lib/x86_64-linux-gnu"]:
            if not cudnn_lib and _exists(ctx, r, sub + "/libcudnn.so"):
                cudnn_lib = str(_p(ctx, r, sub).realpath)
    if not cudnn_inc or not cudnn_lib:
        _stub(ctx, "cuDNN not found (cudnn.h %s, libcudnn.so %s; set CUDNN_PATH)" %
                   ("found" if cudnn_inc else "missing", "found" if cudnn_lib else "missing"))
        return
    if cudnn_inc != root + "/include":
        inc_dirs.append(cudnn_inc)
    if cudnn_lib not in lib_dirs:
        lib_dirs.append(cudnn_lib)

    # link the include folders into the repository so cc rules can declare them
    for i, d in enumerate(inc_dirs):
        ctx.symlink(_p(ctx, d), "inc%d" % i)
    ctx.file("BUILD", "\n".join([
        "# CUDA from %s (cuDNN library in %s)" % (root, cudnn_lib),
        "package(default_visibility = [\"//visibility:public\"])",
        "cc_library(",
        "    name = \"cuda_headers\",",
        "    hdrs = glob([%s]),"% ", ".join(["\"inc%d/**/*.h\", \"inc%d/**/*.hpp\"" % (i, i) for i in range(len(inc_dirs))]),
        "    includes = [%s]," % ", ".join(["\"inc%d\"" % i for i in range(len(inc_dirs))]),
        ")",
        "",
    ]))
    ctx.file("defs.bzl", "\n".join([
        "CUDA_FOUND = True",
        "CUDA_REASON = \"\"",
        "NVCC = %r" % (root + "/bin/nvcc"),
        "CUDA_ARCHS = %r" % _archs(ctx),
        "CUDA_LIB_DIRS = %r" % lib_dirs,
        "",
    ]))

local_cuda = repository_rule(
    implementation = _local_cuda_impl,
    local = True,
    configure = True,
    environ = ["CUDA_PATH", "CUDA_HOME", "CUDNN_PATH", "MDL_CUDA", "MDL_CUDA_ARCHS", "PATH"],
)
