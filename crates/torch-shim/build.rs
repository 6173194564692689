//! Compiles cpp/shim.cpp, cpp/distributed.cpp and cpp/nccl.cpp against the headers of the libtorch
//! that torch-sys links (the torch wheel ships them), with torch-sys's own flags.
//! c10d's Gloo process group also needs gloo's own headers, which the wheel lacks:
//! GLUE_RS_GLOO_INCLUDE, else `.venv/gloo/usr/include` (written by `cargo xtask
//! setup`); without them the distributed entry points report how to get them.

use std::path::{Path, PathBuf};

/// The folder holding `gloo/context.h`, if any.
fn gloo_include() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=GLUE_RS_GLOO_INCLUDE");
    let candidate = match std::env::var_os("GLUE_RS_GLOO_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/gloo/usr/include"),
    };
    let marker = candidate.join("gloo/context.h");
    println!("cargo:rerun-if-changed={}", marker.display());
    marker.is_file().then_some(candidate)
}

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-changed=cpp/distributed.cpp");
    println!("cargo:rerun-if-changed=cpp/nccl.cpp");
    println!("cargo:rerun-if-changed=cpp/guarded.hpp");
    // torch-sys (`links = "tch"`) exports its libtorch lib folder to direct dependents.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib.parent().expect("libtorch lib folder has a parent");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("cpp/shim.cpp")
        .file("cpp/distributed.cpp")
        .file("cpp/nccl.cpp");
    // libtorch's intra-op threads are an OpenMP team (AT_PARALLEL_OPENMP), and
    // at::parallel_for is a header template: compiled without OpenMP it runs its whole
    // range on the calling thread. Built with -fopenmp against the libgomp the wheel
    // ships (the runtime libtorch_cpu itself loads), the shim's loops share that team.
    let gomp = lib.join("libgomp.so.1");
    println!("cargo:rerun-if-changed={}", gomp.display());
    if gomp.is_file() {
        build.flag("-fopenmp");
        println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    }
    if let Some(gloo) = gloo_include() {
        build.include(gloo).define("USE_C10D_GLOO", None);
    } else {
        println!(
            "cargo:warning=gloo headers not found: glue-rs builds without data-parallel \
             training (run `cargo xtask setup`, or set GLUE_RS_GLOO_INCLUDE)"
        );
    }
    build.compile("glue_rs_torch_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    // cpp/nccl.cpp opens libnccl.so.2 at run time (dlopen).
    println!("cargo:rustc-link-lib=dylib=dl");
    // Absolute, beside the workspace's relative rpaths: doctests run from a temp folder.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // For direct dependents' build scripts (DEP_GLUE_RS_TORCH_SHIM_LIBTORCH_LIB): the
    // libtorch this build links, resolved, so an installed binary can find it.
    let resolved = lib.canonicalize().unwrap_or(lib.clone());
    println!("cargo:libtorch_lib={}", resolved.display());
}
