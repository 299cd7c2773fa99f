//! Reading your own writes across nodes. Every answer says how far this node had folded the log
//! (`Vadyl-Log-Position`); a request that sends that figure back as `Vadyl-Log-Position-At-Least`
//! — to this node or to any other on the same database — is answered only once the node has folded
//! the log that far, by reading the log itself rather than waiting for a change notice. Without the
//! header a node answers from its state as of the last notice, which follows other nodes' commits
//! within milliseconds.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::AppState;

/// The answer's header: the newest position this node had folded when it answered.
pub const POSITION: &str = "vadyl-log-position";
/// The request's header: answer from a state that has folded at least this position.
pub const AT_LEAST: &str = "vadyl-log-position-at-least";

pub async fn read_your_writes(State(st): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    if let Some(value) = req.headers().get(AT_LEAST) {
        let Some(wanted) = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
            return Problem::bad_request(format!("{AT_LEAST} must be a log position (a whole number)")).into_response();
        };
        let app = st.app.clone();
        let reached = match tokio::task::spawn_blocking(move || app.registry().catch_up_to(wanted)).await {
            Ok(Ok(reached)) => reached,
            Ok(Err(e)) => return Problem::from(e).into_response(),
            Err(e) => {
                return Problem::internal(format!("the catch-up with the log did not finish: {e}")).into_response()
            }
        };
        if reached < wanted {
            return Problem::new(
                StatusCode::CONFLICT,
                "log-position-not-reached",
                format!("the log ends at position {reached}; {AT_LEAST} asked for {wanted}, which no node has written"),
            )
            .into_response();
        }
    }
    let mut response = next.run(req).await;
    let folded = st.app.registry().folded_position();
    response.headers_mut().insert(POSITION, HeaderValue::from(folded));
    response
}
