//! The HTTP surface: one `app(state)` router shared by the server and the tests.

mod bkci_op;
mod callbacks;
mod console;
mod deliveries;
mod envelope;
mod error;
mod events;
mod extract;
mod global;
mod health;
mod history;
mod members;
mod metrics;
mod paging;
mod params;
mod pipelines;
mod recovery;
pub(crate) mod server;

pub(crate) use bkci_op::secret_param_headers;
pub use events::PublishedEvent;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::domain::{ApigwType, PipelineId};
use crate::error::AppError;
use crate::http::envelope::ErrorEnvelope;
use crate::telemetry::names;
use error::ErrorDetail;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "devops-callbacks",
        description = "Project callbacks compatible with the bk-ci OpenAPI v4 callback resource, \
                       and their reliable delivery. Every response is the envelope \
                       {status, message, data}; status 0 is success. The v4 routes are also \
                       served under /api and /openapi/api (the BlueKing API gateway's and \
                       bk-ci nginx's backend paths): see each v4 path's servers."
    ),
    components(schemas(ApigwType, PipelineId, ErrorEnvelope)),
    tags(
        (name = "callbacks", description = "The v4 callback resource"),
        (name = "history", description = "Delivery attempts, and where each delivery stands"),
        (name = "recovery", description = "Bulk recovery of failed and cancelled deliveries"),
        (name = "intake", description = "Event intake (service token)"),
        (name = "op", description = "Operations API (service token)"),
        (name = "health", description = "Health, readiness, metrics, this document")
    )
)]
struct ApiDoc;

pub fn app(state: AppState) -> Router {
    let limits = Limits {
        timeout: state.config.request_timeout,
        max_body_bytes: state.config.max_body_bytes,
        max_uri_bytes: state.config.max_uri_bytes,
        max_header_bytes: state.config.max_header_bytes,
    };
    let (v4, v4_api) = OpenApiRouter::new()
        .merge(callbacks::router())
        .merge(history::router())
        .merge(deliveries::router())
        .merge(recovery::router())
        .merge(pipelines::router())
        .split_for_parts();
    let (routes, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(events::router())
        .merge(global::router())
        .merge(bkci_op::router())
        .merge(members::router())
        .merge(metrics::router())
        .merge(health::router())
        .split_for_parts();
    api.merge(served_under_gateway_prefixes(v4_api));
    let routes = GATEWAY_PREFIXES
        .iter()
        .fold(routes.merge(v4.clone()), |routes, prefix| {
            routes.nest(prefix, v4.clone())
        });
    api.paths.add_path_operation(
        "/openapi.json",
        vec![utoipa::openapi::HttpMethod::Get],
        utoipa::openapi::path::OperationBuilder::new()
            .tag("health")
            .operation_id(Some("openapi"))
            .summary(Some("This OpenAPI document"))
            .response(
                "200",
                utoipa::openapi::ResponseBuilder::new()
                    .description("The OpenAPI document")
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new().build(),
                    ),
            )
            .build(),
    );
    let document: Arc<str> = api
        .to_json()
        .expect("the OpenAPI document serializes")
        .into();
    let console = console::router(state.clone());
    let routes = routes
        .route(
            "/openapi.json",
            get(move || serve_document(document.clone())),
        )
        .with_state(state)
        .merge(console);
    with_edges(routes, limits)
}

/// Where the v4 routes are served besides their own path, `/{apigwType}/v4/…`: the backend
/// path of the BlueKing API gateway and the upstream path of bk-ci's nginx (`/api/…`), so
/// either can point at the service without a rewrite. The same routes, nested: the request
/// metrics' `route` label names the prefix, and an unknown gateway type under a prefix is the
/// same 404.
pub const GATEWAY_PREFIXES: [&str; 2] = ["/api", "/openapi/api"];

/// The v4 paths of the document, each listed once, with the bases it is served under as the
/// path's `servers` (top-level servers would claim the op and health routes are there too).
fn served_under_gateway_prefixes(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let servers: Vec<utoipa::openapi::Server> = std::iter::once("/")
        .chain(GATEWAY_PREFIXES)
        .map(utoipa::openapi::Server::new)
        .collect();
    for item in api.paths.paths.values_mut() {
        item.servers = Some(servers.clone());
    }
    api
}

/// What one request may cost.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_body_bytes: usize,
    max_uri_bytes: usize,
    max_header_bytes: usize,
}

async fn serve_document(document: Arc<str>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// The layers that make every response an envelope with a request id, whatever went wrong:
/// unknown route, wrong method, oversized target, headers or body, timeout or panic.
fn with_edges(routes: Router, limits: Limits) -> Router {
    routes.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(middleware::from_fn_with_state(limits, edge))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
    )
}

/// The span every log line of a request is written in: the route template, not the path (and
/// never the query, which carries tokens). The path only when no route matched, to say what was
/// asked for.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let matched = request.extensions().get::<MatchedPath>();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %matched.map_or("unmatched", MatchedPath::as_str),
        path = matched
            .is_none()
            .then(|| tracing::field::display(request.uri().path())),
        request_id = %request_id,
    )
}

/// Refuses oversized request targets and headers, bounds the request's time, turns any
/// response that is not JSON yet (axum's 404/405, the body limit's 413) into the envelope, logs
/// the cause of server errors once and the request's one line, inside the request span.
async fn edge(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = if let Err(refused) = check_size(&request, limits) {
        refused.into_response()
    } else {
        match tokio::time::timeout(limits.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => AppError::Unavailable(format!(
                "the request timed out after {} ms",
                limits.timeout.as_millis()
            ))
            .into_response(),
        }
    };
    let response = enveloped(response, &path);
    let took = started.elapsed();
    let status = response.status();
    ::metrics::histogram!(names::HTTP_DURATION, "method" => method, "route" => route.clone())
        .record(took.as_secs_f64());
    ::metrics::counter!(
        names::HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(status = status.as_u16(), "{detail}");
    }
    // The request's line at the default level; its span adds the method, route and id.
    tracing::info!(
        status = status.as_u16(),
        ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        "answered"
    );
    response
}

/// The response as it is if it is JSON, a console page, a success or a redirect, else the
/// error envelope its status means (keeping a 405's `Allow`).
fn enveloped(response: Response, path: &str) -> Response {
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_json = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // The console answers with pages and redirects of its own.
    let is_page = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let status = response.status();
    if is_json || is_page || status.is_success() || status.is_redirection() {
        return response;
    }
    let error = match response.status() {
        StatusCode::NOT_FOUND => AppError::RouteNotFound(path.to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        other => AppError::Internal(format!("unexpected {other} without a body")),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut enveloped = error.into_response();
    if let Some(allow) = allow {
        enveloped.headers_mut().insert(header::ALLOW, allow);
    }
    enveloped
}

/// The method as a metric label: anyone can send any method, so only the standard ones get a
/// series of their own and the rest share `other` (routes are bounded the same way: only
/// matched route templates, else `unmatched`).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Checked before routing, so no extractor ever parses an oversized query or header. (Beyond
/// hyper's own limits — 100 headers, ~400 KiB — hyper answers before the service is reached.)
fn check_size(request: &Request, limits: Limits) -> Result<(), AppError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(AppError::UriTooLong {
            max: limits.max_uri_bytes,
        });
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > limits.max_header_bytes {
        return Err(AppError::HeadersTooLarge {
            max: limits.max_header_bytes,
        });
    }
    Ok(())
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    AppError::Internal(format!("handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn call(router: Router, request: Request) -> (StatusCode, serde_json::Value) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn edges(routes: Router) -> Router {
        with_edges(
            routes,
            Limits {
                timeout: Duration::from_millis(50),
                max_body_bytes: 16,
                max_uri_bytes: 64,
                max_header_bytes: 128,
            },
        )
    }

    #[tokio::test]
    async fn a_panic_becomes_a_500_envelope_without_the_panic_text() {
        async fn boom() -> &'static str {
            panic!("secret detail")
        }
        let router = edges(Router::new().route("/boom", get(boom)));
        let (status, body) = call(router, Request::get("/boom").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["status"], 500);
        assert!(!body.to_string().contains("secret detail"));
    }

    #[tokio::test]
    async fn a_slow_handler_times_out_with_a_503_envelope() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        };
        let router = edges(Router::new().route("/slow", get(slow)));
        let (status, body) = call(router, Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], 503);
        assert!(body["message"].as_str().unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn an_oversized_target_or_header_is_refused_before_routing() {
        let router = edges(Router::new().route("/ok", get(|| async { "ok" })));
        let long = format!("/ok?q={}", "x".repeat(64));
        let (status, body) = call(
            router.clone(),
            Request::get(long.as_str()).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(body["status"], 414);
        let request = Request::get("/ok")
            .header("x-big", "y".repeat(128))
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(router.clone(), request).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["status"], 431);
        let request = Request::get("/ok?q=fits").body(Body::empty()).unwrap();
        assert_eq!(
            router.oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn an_oversized_body_is_a_413_envelope() {
        let router =
            edges(Router::new().route("/echo", axum::routing::post(|body: String| async { body })));
        let request = Request::post("/echo")
            .header(header::CONTENT_LENGTH, "100")
            .body(Body::from("x".repeat(100)))
            .unwrap();
        let (status, body) = call(router, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["status"], 413);
    }
}
