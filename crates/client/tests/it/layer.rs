//! The tower layer (and the reqwest middleware) against the double: a token Tableau no longer
//! knows is recovered with one invalidation and one new sign-in.

use http::{Request, Response, StatusCode};
use tableau_token_broker_client::{CredentialsRequest, TableauAuthLayer};
use tower::{BoxError, Layer, ServiceExt};

use crate::support::{SCOPE, System, USER, https_client};

fn request() -> CredentialsRequest {
    CredentialsRequest::new("finance", USER).scopes([SCOPE])
}

#[tokio::test]
async fn a_token_tableau_expired_is_recovered_with_one_invalidation_and_one_sign_in() {
    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();
    let http = https_client(&sys.double);
    // An HTTP client service over reqwest, with String bodies (Clone, as the layer requires).
    let service = tower::service_fn(move |req: Request<String>| {
        let http = http.clone();
        async move {
            let answer = http.execute(reqwest::Request::try_from(req)?).await?;
            let status = answer.status();
            let body = answer.text().await?;
            let mut out = Response::new(body);
            *out.status_mut() = status;
            Ok::<_, BoxError>(out)
        }
    });
    let tableau = TableauAuthLayer::new(client.clone(), request()).layer(service);
    let creds = client.credentials(&request()).await.unwrap();
    let list = || {
        Request::get(format!("{}/workbooks", creds.site_url()))
            .header("Accept", "application/json")
            .body(String::new())
            .unwrap()
    };

    let ok = tableau.clone().oneshot(list()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "{}", ok.body());
    assert!(ok.body().contains("workbook"), "{}", ok.body());
    let signins = sys.double.stats().signins_ok;
    let invalidations = sys.broker.rpc_count("InvalidateCredentials").await;
    assert_eq!(signins, 1);

    // Tableau forgets every session (a restart): the cached token now gets 401.
    sys.double.end_all_sessions();
    let recovered = tableau.clone().oneshot(list()).await.unwrap();
    assert_eq!(recovered.status(), StatusCode::OK, "{}", recovered.body());
    assert_eq!(
        sys.double.stats().signins_ok - signins,
        1,
        "one new sign-in"
    );
    assert_eq!(
        sys.broker.rpc_count("InvalidateCredentials").await - invalidations,
        1,
        "one invalidation"
    );

    // The new token is cached: the next call needs nothing more.
    let again = tableau.oneshot(list()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(sys.double.stats().signins_ok - signins, 1);
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_recovers_the_same_way() {
    use tableau_token_broker_client::TableauAuthMiddleware;

    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();
    let creds = client.credentials(&request()).await.unwrap();
    let http = reqwest_middleware::ClientBuilder::new(https_client(&sys.double))
        .with(TableauAuthMiddleware::new(client, request()))
        .build();
    let url = format!("{}/projects", creds.site_url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    let invalidations = sys.broker.rpc_count("InvalidateCredentials").await;
    sys.double.end_all_sessions();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(sys.double.stats().signins_ok, 2);
    assert_eq!(
        sys.broker.rpc_count("InvalidateCredentials").await - invalidations,
        1
    );
}
