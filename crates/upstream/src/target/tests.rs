use super::*;

fn dep(provider: v1::Provider, base_url: &str) -> v1::Deployment {
    v1::Deployment {
        id: "ns/d".into(),
        provider: provider as i32,
        base_url: base_url.into(),
        api_key: "sk-x".into(),
        api_version: "2024-10-21".into(),
        ..Default::default()
    }
}

#[test]
fn openai_paths_and_origin() {
    let t = Target::try_from(&dep(v1::Provider::Openai, "https://example.test/v1/")).unwrap();
    assert_eq!(t.origin(), "https://example.test:443");
    assert_eq!(t.path(Endpoint::ChatCompletions, "a/b?c").unwrap(), "/v1/chat/completions");
    assert_eq!(t.models_path(), "/v1/models");
    assert_eq!(t.credential.as_ref().unwrap().1, "Bearer sk-x");
    let t = Target::try_from(&dep(v1::Provider::Openai, "http://[::1]:8080")).unwrap();
    assert_eq!((t.origin.host.as_str(), t.origin.port, t.origin.tls), ("::1", 8080, false));
    assert_eq!(t.path(Endpoint::Embeddings, "m").unwrap(), "/embeddings");
}

#[test]
fn azure_puts_one_encoded_segment_in_the_path() {
    let t = Target::try_from(&dep(v1::Provider::Azure, "https://example.test")).unwrap();
    assert_eq!(
        t.path(Endpoint::Embeddings, "emb large").unwrap(),
        "/openai/deployments/emb%20large/embeddings?api-version=2024-10-21"
    );
    assert_eq!(t.path(Endpoint::Responses, "../x").unwrap(), "/openai/responses?api-version=2024-10-21");
    for bad in ["a/b", "..", "../admin", "x?y=1", "x#y", "a\nb", "a\u{7f}", "", "a\\b"] {
        assert!(t.path(Endpoint::ChatCompletions, bad).is_err(), "{bad:?}");
    }
    assert_eq!(t.credential.as_ref().unwrap().0, "api-key");
}

#[test]
fn unusable_deployments_are_refused() {
    for url in
        ["ftp://x/", "http://user:pass@host/v1", "not a url", "http:///v1", "/v1", "http://h:99999/v1", "http://h:0"]
    {
        assert!(
            matches!(Target::try_from(&dep(v1::Provider::Openai, url)), Err(InvalidTarget::BaseUrl { .. })),
            "{url}"
        );
    }
    let mut d = dep(v1::Provider::Openai, "http://h");
    d.api_key = "sk-1\nInjected: yes".into();
    assert!(matches!(Target::try_from(&d), Err(InvalidTarget::Credential { .. })));
    d.provider = 99;
    assert!(matches!(Target::try_from(&d), Err(InvalidTarget::Provider { .. })));
}

#[test]
fn debug_never_prints_the_credential() {
    let t = Target::try_from(&dep(v1::Provider::Openai, "http://h")).unwrap();
    assert!(!format!("{t:?}").contains("sk-x"));
}
