//! An absolute RUNPATH to the libtorch this build links, ahead of the workspace's
//! relative ones (.cargo/config.toml), so that a `cargo install`ed glue-cli starts
//! from any directory. A LIBTORCH exported at build time is the one recorded.

fn main() {
    let lib = std::env::var("DEP_GLUE_RS_TORCH_SHIM_LIBTORCH_LIB")
        .expect("torch-shim reports its libtorch folder");
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
    println!("cargo:rustc-env=GLUE_CLI_LIBTORCH_LIB={lib}");
}
