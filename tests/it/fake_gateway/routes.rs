//! Routes: health, unknown paths and wrong methods.

use tower_wacht::testing::*;

use super::helpers::*;

#[tokio::test]
async fn health_unknown_path_and_wrong_method() {
    let gw = FakeGateway::start().await.unwrap();
    assert!(gw.url().starts_with("http://127.0.0.1:"));
    assert!(!gw.url().ends_with('/'));
    assert_eq!(gw.url(), format!("http://{}", gw.addr()));

    let health = send(client().get(format!("{}/health", gw.url()))).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text, "OK");

    let missing = send(client().get(format!("{}/v1/nope", gw.url()))).await;
    assert_eq!(missing.status, 404);

    let wrong = send(client().get(check_url(&gw))).await;
    assert_eq!(wrong.status, 405);
    let wrong = send(client().put(check_url(&gw))).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(gw.calls(), 0, "only POST /v1/authz/check counts");
}
