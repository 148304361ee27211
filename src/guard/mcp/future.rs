//! [`McpGuardFuture`]: the response future of [`McpGuard`](super::McpGuard).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

pin_project! {
    /// Response future of [`McpGuard`](super::McpGuard): the inner future for requests the
    /// guard does not inspect, a boxed future for POSTs whose body it reads (and for a
    /// refusal it answers before reading anything).
    pub struct McpGuardFuture<F, ResB, E> {
        #[pin]
        state: McpState<F, ResB, E>,
    }
}

pin_project! {
    #[project = McpStateProj]
    enum McpState<F, ResB, E> {
        Inner { #[pin] future: F },
        Checking { future: BoxFuture<'static, Result<Response<ResponseBody<ResB>>, E>> },
    }
}

impl<F, ResB, E> McpGuardFuture<F, ResB, E> {
    pub(super) fn inner(future: F) -> Self {
        McpGuardFuture {
            state: McpState::Inner { future },
        }
    }

    pub(super) fn checking(future: BoxFuture<'static, Result<Response<ResponseBody<ResB>>, E>>) -> Self {
        McpGuardFuture {
            state: McpState::Checking { future },
        }
    }
}

impl<F, ResB, E> Future for McpGuardFuture<F, ResB, E>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            McpStateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            McpStateProj::Checking { future } => future.as_mut().poll(cx),
        }
    }
}
