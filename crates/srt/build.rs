//! Links libsrt, found with pkg-config (Debian: libsrt-gnutls-dev, which ffmpeg's libsrt also uses).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::process::Command::new("pkg-config")
        .args(["--libs", "srt"])
        .output();
    let flags = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            println!(
                "cargo:warning=pkg-config found no libsrt; install it with scripts/install-build-deps.sh (Debian: libsrt-gnutls-dev)"
            );
            "-lsrt-gnutls".into()
        }
    };
    for flag in flags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            if lib.contains("srt") {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
    }
}
