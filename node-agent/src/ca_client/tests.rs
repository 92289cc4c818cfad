use super::*;

#[tokio::test]
async fn token_file_is_reread_for_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let source = TokenSource::File(path.clone());

    let missing = source.token().await.unwrap_err();
    assert!(
        missing.to_string().contains(&path.display().to_string()),
        "names the path: {missing}"
    );
    assert_eq!(missing.label(), "token");

    std::fs::write(&path, "").unwrap();
    let empty = source.token().await.unwrap_err();
    assert!(empty.to_string().contains("empty"), "{empty}");
    assert!(empty.to_string().contains(&path.display().to_string()));

    std::fs::write(&path, "first-token\n").unwrap();
    assert_eq!(
        source.token().await.unwrap().unwrap().as_str(),
        "first-token"
    );
    // The kubelet rotates the file: the next request sees the new token.
    std::fs::write(&path, "second-token").unwrap();
    assert_eq!(
        source.token().await.unwrap().unwrap().as_str(),
        "second-token"
    );

    std::fs::write(&path, vec![b'a'; 70 * 1024]).unwrap();
    assert!(
        source
            .token()
            .await
            .unwrap_err()
            .to_string()
            .contains("bytes")
    );
}

#[tokio::test]
async fn secrets_are_redacted_in_debug() {
    let fixed = TokenSource::fixed("s3cr3t-token");
    assert!(!format!("{fixed:?}").contains("s3cr3t"));
    assert_eq!(
        fixed.token().await.unwrap().unwrap().as_str(),
        "s3cr3t-token"
    );
    assert!(TokenSource::None.token().await.unwrap().is_none());
    let jwt = MintedJwt {
        token: Zeroizing::new("eyJ.s3cr3t.sig".into()),
        spiffe_id: "spiffe://td/x".into(),
        expires_at: SystemTime::UNIX_EPOCH,
    };
    assert!(!format!("{jwt:?}").contains("s3cr3t"));
    let request = CsrRequest {
        token: Some("s3cr3t"),
        ..CsrRequest::default()
    };
    assert!(!format!("{request:?}").contains("s3cr3t"));
}

#[test]
fn errors_keep_the_grpc_code() {
    let err = CaClientError::from(tonic::Status::permission_denied("no"));
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    assert_eq!(err.label(), "permission_denied");
    assert_eq!(CaClientError::Connect("x".into()).label(), "connect");
}

#[tokio::test]
async fn unreadable_client_certificate_files_fail_with_the_path() {
    let mut config = CaClientConfig::new("https://127.0.0.1:1", Vec::new(), "localhost");
    config.client_identity = Some(ClientIdentity::Files {
        chain: "/nonexistent/chain.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let err = CaClient::connect_lazy(&config).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/chain.pem"), "{err}");
}
