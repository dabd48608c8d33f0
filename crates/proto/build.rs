//! Compiles proto/llmroute/v1/routing.proto with protox (pure Rust, no system protoc).
//! The gRPC client and server are generated only with the `grpc` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build script reused from a
    // target directory shared by clones in other places must still find this clone's file.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let file = root.join("llmroute/v1/routing.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        // Deployment carries a credential: its Debug is written by hand, redacted.
        .skip_debug(["llmroute.v1.Deployment"])
        // A part's compressed bytes are shared by every subscriber, not copied per stream.
        .bytes(".llmroute.v1.EncodedPart.gzip")
        .compile_fds(descriptors)?;
    Ok(())
}
