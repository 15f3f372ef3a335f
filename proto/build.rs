//! Generates the tonic/prost code for every .proto file with the vendored protoc,
//! so that no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = [
        "proto/tarn/namenode.proto",
        "proto/tarn/raft.proto",
        "proto/tarn/datanode.proto",
        "proto/tarn/resource_manager.proto",
        "proto/tarn/jobs.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // The modules are flat in lib.rs, not nested by package, so the namenode API names the
    // datanode types by their crate path. This run also writes a partial datanode module
    // (its services, over the extern types), so the datanode run must come after it.
    // Small files' bytes as `Bytes` too: handed on without a copy.
    tonic_prost_build::configure()
        .extern_path(".tarn.datanode.v1", "crate::datanode")
        .bytes(".tarn.namenode.v1.PutSmallRequest.data")
        .bytes(".tarn.namenode.v1.GetBlocksResponse.inline_data")
        .compile_protos(&["proto/tarn/namenode.proto", "proto/tarn/raft.proto"], &["proto"])?;
    // Block data as `Bytes`: a packet forwarded down a write pipeline is not copied.
    tonic_prost_build::configure()
        .bytes(".tarn.datanode.v1.WritePacket.data")
        .bytes(".tarn.datanode.v1.ReadChunk.data")
        .compile_protos(&["proto/tarn/datanode.proto"], &["proto"])?;
    tonic_prost_build::configure().compile_protos(&["proto/tarn/resource_manager.proto"], &["proto"])?;
    tonic_prost_build::configure()
        .bytes(".tarn.jobs.v1.RunEvent.arrow")
        .bytes(".tarn.jobs.v1.RunRequest.logical_plan")
        .compile_protos(&["proto/tarn/jobs.proto"], &["proto"])?;
    Ok(())
}
