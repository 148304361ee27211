//! A scripted response body: data chunks, pauses and an optional mid-body failure.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// One step of a [`FakeBody`].
#[derive(Debug)]
pub(crate) enum Step {
    /// Yield this chunk.
    Data(Bytes),
    /// Wait before the next step.
    Pause(Duration),
    /// Fail the body, which makes hyper abort the connection.
    Fail,
}

/// Response body playing [`Step`]s in order.
#[derive(Debug)]
pub(crate) struct FakeBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl FakeBody {
    /// Body made of `steps`.
    pub(crate) fn scripted(steps: Vec<Step>) -> Self {
        Self {
            steps: steps.into(),
            sleep: None,
        }
    }

    /// A complete body sent at once.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::scripted(vec![Step::Data(bytes.into())])
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self::scripted(Vec::new())
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(bytes)) if bytes.is_empty() => {}
                Some(Step::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Step::Pause(delay)) => this.sleep = Some(Box::pin(tokio::time::sleep(delay))),
                Some(Step::Fail) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake gateway fault: body aborted",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sleep.is_none() && self.steps.iter().all(|s| matches!(s, Step::Data(b) if b.is_empty()))
    }

    fn size_hint(&self) -> SizeHint {
        // Exact only when the body is known to complete normally.
        let mut len = 0u64;
        for step in &self.steps {
            match step {
                Step::Data(bytes) => {
                    len = len.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                }
                Step::Pause(_) => {}
                Step::Fail => return SizeHint::default(),
            }
        }
        SizeHint::with_exact(len)
    }
}
