//! Compiles cpp/shim.cpp against the headers of the libtorch that torch-sys links
//! (the torch wheel ships them), with torch-sys's own flags.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    // torch-sys (`links = "tch"`) exports its libtorch lib folder to direct dependents.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib.parent().expect("libtorch lib folder has a parent");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("cpp/shim.cpp")
        .compile("glue_rs_torch_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    // Absolute, beside the workspace's relative rpaths: doctests run from a temp folder.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // For direct dependents' build scripts (DEP_GLUE_RS_TORCH_SHIM_LIBTORCH_LIB): the
    // libtorch this build links, resolved, so an installed binary can find it.
    let resolved = lib.canonicalize().unwrap_or(lib.clone());
    println!("cargo:libtorch_lib={}", resolved.display());
}
