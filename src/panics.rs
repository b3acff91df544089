//! A panic is a bug, but it must not leave a run `running` nor take the daemon down with it:
//! [`catch_panic`] turns a panic inside a future into an error its caller records.

use std::future::Future;

/// Run `fut`, turning a panic inside it into `Err(message)`.
pub async fn catch_panic<T>(fut: impl Future<Output = T> + Send) -> Result<T, String> {
    CatchPanic(Box::pin(fut)).await
}

struct CatchPanic<'a, T>(std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for CatchPanic<'_, T> {
    type Output = Result<T, String>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
