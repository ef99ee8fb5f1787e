"""A repository rule that wraps a system library found by pkg-config in a cc_library."""

def _split(s):
    return [w for w in s.strip().split(" ") if w]

def _system_library_impl(ctx):
    args = ["pkg-config", "--cflags", "--libs"] + ctx.attr.modules
    result = ctx.execute(args)
    if result.return_code != 0:
        fail("pkg-config failed for %s: %s (run scripts/setup.sh)" % (ctx.attr.modules, result.stderr))

    includes = []
    defines = []
    linkopts = []
    for flag in _split(result.stdout.replace("\n", " ")) + ctx.attr.extra_linkopts:
        if flag.startswith("-I"):
            path = flag[2:]
            if path != "/usr/include" and path not in includes:
                includes.append(path)
        elif flag.startswith("-D"):
            defines.append(flag[2:])
        elif flag.startswith("-l") or flag.startswith("-L") or flag.startswith("-Wl") or flag == "-pthread":
            # Debian's abseil repeats libraries; the last occurrence is the one the linker needs.
            if flag in linkopts:
                linkopts.remove(flag)
            linkopts.append(flag)

    # Bazel only accepts include paths inside the repository: link each one in.
    local_includes = []
    for i, path in enumerate(includes):
        name = "include%d" % i
        ctx.symlink(path, name)
        local_includes.append(name)

    ctx.file("BUILD.bazel", """
cc_library(
    name = "{name}",
    hdrs = glob(["include*/**/*.h", "include*/**/*.hpp", "include*/**/*.inc"], allow_empty = True),
    includes = {includes},
    defines = {defines},
    linkopts = {linkopts},
    visibility = ["//visibility:public"],
)
""".format(
        name = ctx.attr.name,
        includes = repr(local_includes),
        defines = repr(defines),
        linkopts = repr(linkopts),
    ))

system_library = repository_rule(
    implementation = _system_library_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(default = []),
    },
    local = True,
)
