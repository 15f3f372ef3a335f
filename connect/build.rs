//! Generates the server side of `spark.connect.SparkConnectService` over the messages of
//! the published `apache-spark-connect-proto` crate (which builds only a client): tonic's
//! manual service builder, so no Spark `.proto` file is copied here.

fn main() {
    use tonic_build::manual::{Builder, Method, Service};
    const MSG: &str = "::spark_connect_proto::spark::connect";
    // (method, route, request, response, client streaming, server streaming)
    let methods: [(&str, &str, &str, &str, bool, bool); 10] = [
        ("execute_plan", "ExecutePlan", "ExecutePlanRequest", "ExecutePlanResponse", false, true),
        ("analyze_plan", "AnalyzePlan", "AnalyzePlanRequest", "AnalyzePlanResponse", false, false),
        ("config", "Config", "ConfigRequest", "ConfigResponse", false, false),
        ("add_artifacts", "AddArtifacts", "AddArtifactsRequest", "AddArtifactsResponse", true, false),
        ("artifact_status", "ArtifactStatus", "ArtifactStatusesRequest", "ArtifactStatusesResponse", false, false),
        ("interrupt", "Interrupt", "InterruptRequest", "InterruptResponse", false, false),
        ("reattach_execute", "ReattachExecute", "ReattachExecuteRequest", "ExecutePlanResponse", false, true),
        ("release_execute", "ReleaseExecute", "ReleaseExecuteRequest", "ReleaseExecuteResponse", false, false),
        ("release_session", "ReleaseSession", "ReleaseSessionRequest", "ReleaseSessionResponse", false, false),
        (
            "fetch_error_details",
            "FetchErrorDetails",
            "FetchErrorDetailsRequest",
            "FetchErrorDetailsResponse",
            false,
            false,
        ),
    ];
    let mut service = Service::builder().name("SparkConnectService").package("spark.connect");
    for (name, route, input, output, client_streaming, server_streaming) in methods {
        let mut m = Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("{MSG}::{input}"))
            .output_type(format!("{MSG}::{output}"))
            .codec_path("::tonic_prost::ProstCodec");
        if client_streaming {
            m = m.client_streaming();
        }
        if server_streaming {
            m = m.server_streaming();
        }
        service = service.method(m.build());
    }
    Builder::new().build_client(false).build_transport(false).compile(&[service.build()]);
    println!("cargo:rerun-if-changed=build.rs");
}
