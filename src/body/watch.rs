//! [`Watch`]: a streamed response body that ends when its caller no longer stands.
//!
//! The body asks its [`Standing`] once before its first frame and then whenever the deadline
//! the last answer gave has passed (the token's expiry or the recheck bound, whichever comes
//! first). Between two asks, a frame costs one comparison: whether the timer has fired, or,
//! before the body has ever had to wait (no timer yet), the clock against the deadline. A
//! timer is armed the first time the inner body has nothing to send, so an idle stream is
//! woken at the deadline and ends on time too; it wakes the task at most once per deadline,
//! is reset to a later one after every ask that lets the stream go on, and is dropped with the
//! body or as soon as the stream ends. Without a Tokio runtime there is no timer: the body is
//! checked on its next frame instead.
//!
//! Ending: the inner body is not polled again; the body ends, after the trailers the standing
//! gave (a gRPC status), if any. An inner body that ends by itself, or sends its own trailers,
//! passes through untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The least time between two asks.
const MIN_GAP: Duration = Duration::from_millis(1);

/// Whether the caller a watched body was opened for still stands (implemented by the layer,
/// which asks the verifier).
pub(crate) trait Standing: Send + Sync {
    /// `Ok(when to ask next)`, always later than now, while the caller stands; once it does
    /// not, `Err` with the trailers to end the body with, if any.
    fn check(&mut self) -> Result<Instant, Option<HeaderMap>>;
}

/// The watch a body carries: where the stream stands, the deadline of the next ask, the
/// timer, and the standing to ask.
pub(crate) struct Watch<S: ?Sized> {
    state: State,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    standing: S,
}

enum State {
    /// Not asked yet: asked before the first frame.
    Fresh,
    /// The caller stood at the last ask.
    Watching,
    /// Cut short: these trailers, if any, then the end.
    Ending(Option<HeaderMap>),
    /// Ended, by the inner body or by the watch.
    Ended,
    /// The inner body sent its trailers: whatever follows is its own.
    Passing,
}

impl<S: Standing> Watch<S> {
    pub(crate) fn new(standing: S) -> Self {
        Watch {
            state: State::Fresh,
            // Unused while fresh: the first poll asks.
            deadline: Instant::now(),
            timer: None,
            standing,
        }
    }
}

impl<S: Standing + ?Sized> Watch<S> {
    /// `Body::poll_frame` of the watched `body`. Never inlined, so that `ResponseBody`'s own
    /// `poll_frame` stays small enough to inline for the bodies that are not watched.
    #[inline(never)]
    pub(crate) fn poll_frame<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body<Data = Bytes>,
    {
        loop {
            match &mut self.state {
                State::Watching => {}
                State::Fresh => {
                    self.ask();
                    continue;
                }
                State::Passing => return body.poll_frame(cx),
                State::Ended => return Poll::Ready(None),
                State::Ending(trailers) => {
                    let trailers = trailers.take();
                    self.state = State::Ended;
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
            }
            if self.is_due() {
                self.ask();
                continue;
            }
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if frame.is_trailers() {
                        self.stop(State::Passing);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    self.stop(State::Ended);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Pending => {
                    if self.poll_timer(cx).is_ready() {
                        // The deadline passed while the body waited: ask now.
                        self.ask();
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// `Body::is_end_stream` of the watched `body`.
    pub(crate) fn is_end_stream<B: Body>(&self, body: &B) -> bool {
        match self.state {
            State::Ended => true,
            State::Ending(_) => false,
            State::Fresh | State::Watching | State::Passing => body.is_end_stream(),
        }
    }

    /// `Body::size_hint` of the watched `body`: at most what it says, maybe nothing more.
    pub(crate) fn size_hint<B: Body>(&self, body: &B) -> SizeHint {
        match self.state {
            State::Ended | State::Ending(_) => SizeHint::with_exact(0),
            State::Passing => body.size_hint(),
            State::Fresh | State::Watching => {
                let mut hint = SizeHint::new();
                if let Some(upper) = body.size_hint().upper() {
                    hint.set_upper(upper);
                }
                hint
            }
        }
    }

    /// Whether the deadline has passed: the timer's word once it is armed, the clock before.
    fn is_due(&self) -> bool {
        match &self.timer {
            Some(timer) => timer.is_elapsed(),
            None => Instant::now() >= self.deadline,
        }
    }

    /// Asks the standing: the stream goes on until a new deadline, or ends.
    fn ask(&mut self) {
        match self.standing.check() {
            Ok(deadline) => {
                // The standing promises a later deadline; should it not keep that promise,
                // the stream is asked again a millisecond on, never in a loop.
                let soonest = Instant::now().checked_add(MIN_GAP).unwrap_or(deadline);
                let deadline = deadline.max(soonest);
                self.deadline = deadline;
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(deadline.into());
                }
                self.state = State::Watching;
            }
            Err(trailers) => self.stop(State::Ending(trailers)),
        }
    }

    /// Stops watching: the timer goes.
    fn stop(&mut self, state: State) {
        self.state = state;
        self.timer = None;
    }

    /// Arms the timer at the deadline if it is not yet (inside a Tokio runtime), and polls it,
    /// so that this task is woken at the deadline.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_none() {
            if tokio::runtime::Handle::try_current().is_err() {
                return Poll::Pending;
            }
            self.timer = Some(Box::pin(tokio::time::sleep_until(self.deadline.into())));
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ResponseBody;
    use futures_util::stream;
    use http_body_util::{BodyExt as _, StreamBody};
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Stands, asking again `every`, until `end` is set; then ends with `trailers`.
    #[derive(Clone, Default)]
    struct Switch {
        end: Arc<AtomicBool>,
        asks: Arc<AtomicUsize>,
        trailers: Option<HeaderMap>,
        /// Breaks the promise: answers a deadline that is already here.
        no_later: bool,
    }

    const EVERY: Duration = Duration::from_millis(20);

    impl Standing for Switch {
        fn check(&mut self) -> Result<Instant, Option<HeaderMap>> {
            self.asks.fetch_add(1, Ordering::SeqCst);
            if self.end.load(Ordering::SeqCst) {
                return Err(self.trailers.clone());
            }
            Ok(Instant::now() + if self.no_later { Duration::ZERO } else { EVERY })
        }
    }

    fn grpc_end() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("16"));
        trailers
    }

    type Frames = stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;

    fn data() -> Result<Frame<Bytes>, Infallible> {
        Ok(Frame::data(Bytes::from_static(b"data: tick\n\n")))
    }

    fn watched(frames: Frames, standing: Switch) -> ResponseBody<StreamBody<Frames>> {
        ResponseBody::watched(StreamBody::new(frames), standing)
    }

    #[tokio::test]
    async fn a_busy_stream_ends_with_the_standings_trailers_and_nothing_after() {
        let switch = Switch {
            trailers: Some(grpc_end()),
            ..Switch::default()
        };
        let mut body = watched(Box::pin(stream::repeat_with(data)), switch.clone());
        for _ in 0..3 {
            assert!(body.frame().await.unwrap().unwrap().is_data());
        }
        assert_eq!(
            switch.asks.load(Ordering::SeqCst),
            1,
            "asked once, before the first frame"
        );
        assert_eq!(body.size_hint().exact(), None);
        switch.end.store(true, Ordering::SeqCst);
        tokio::time::sleep(EVERY * 2).await;
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "16");
        assert!(body.is_end_stream() && body.size_hint().exact() == Some(0));
        assert!(body.frame().await.is_none());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_idle_stream_is_woken_and_ended_without_trailers_for_http() {
        let switch = Switch::default();
        let mut body = watched(Box::pin(stream::pending()), switch.clone());
        let end = Arc::clone(&switch.end);
        tokio::spawn(async move {
            tokio::time::sleep(EVERY * 3).await;
            end.store(true, Ordering::SeqCst);
        });
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
        assert!(matches!(frame, Ok(None)), "the timer woke the idle body and it ended");
        assert!(body.is_end_stream());
        // Woken at most once per deadline while it stood: no spinning.
        let asks = switch.asks.load(Ordering::SeqCst);
        assert!((2..50).contains(&asks), "{asks} asks");
    }

    #[tokio::test]
    async fn a_stream_that_ends_by_itself_keeps_its_own_trailers() {
        let mut own = HeaderMap::new();
        own.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = stream::iter([data(), Ok(Frame::trailers(own))]);
        let switch = Switch {
            trailers: Some(grpc_end()),
            ..Switch::default()
        };
        let mut body = watched(Box::pin(frames), switch.clone());
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        // Ended after its own trailers: the watch adds nothing, even once its caller is gone.
        switch.end.store(true, Ordering::SeqCst);
        tokio::time::sleep(EVERY * 2).await;
        assert!(body.frame().await.is_none());
        assert_eq!(switch.asks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_standing_that_answers_no_later_deadline_cannot_make_the_body_spin() {
        let switch = Switch {
            no_later: true,
            ..Switch::default()
        };
        let mut body = watched(Box::pin(stream::pending()), switch.clone());
        let idle = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
        assert!(idle.is_err(), "an idle body stays pending");
        let asks = switch.asks.load(Ordering::SeqCst);
        assert!(
            asks <= 200,
            "asked {asks} times in 100 ms: at most once a millisecond, give or take"
        );
        let mut busy = watched(Box::pin(stream::repeat_with(data)), switch);
        for _ in 0..10 {
            assert!(busy.frame().await.unwrap().unwrap().is_data());
        }
    }

    #[tokio::test]
    async fn a_caller_gone_before_the_first_frame_gets_nothing() {
        let switch = Switch::default();
        switch.end.store(true, Ordering::SeqCst);
        let mut body = watched(Box::pin(stream::repeat_with(data)), switch);
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn without_a_runtime_the_clock_is_read_on_each_frame() {
        let switch = Switch::default();
        let mut body = watched(Box::pin(stream::repeat_with(data)), switch.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(poll(), Poll::Ready(Some(Ok(_)))));
        switch.end.store(true, Ordering::SeqCst);
        std::thread::sleep(EVERY * 2);
        assert!(matches!(poll(), Poll::Ready(None)));
    }

    #[test]
    fn a_watched_body_is_send_and_sync_like_its_inner_body() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ResponseBody<http_body_util::Full<Bytes>>>();
    }
}
