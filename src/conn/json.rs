//! JSON messages with serde (feature `json`), as gorilla's `ReadJSON` and
//! `WriteJSON`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Conn, MessageType, ReadHalf, Stream, WriteHalf};
use crate::error::{Cause, Error, Result};

impl<S: Stream> ReadHalf<S> {
    /// Reads the next message (text or binary) and decodes it as JSON.
    /// Cancel-safe, as [`ReadHalf::read_message`].
    pub async fn read_json<T: DeserializeOwned>(&mut self) -> Result<T> {
        let message = self.read_message().await?;
        serde_json::from_slice(&message.data).map_err(|e| Error::Json(Cause::with_source("", e)))
    }
}

impl<S: Stream> WriteHalf<S> {
    /// Encodes `value` as JSON and sends it as one text message. Nothing is
    /// sent when encoding fails. Cancel safety: as [`WriteHalf::write_message`].
    pub async fn write_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let data = serde_json::to_vec(value).map_err(|e| Error::Json(Cause::with_source("", e)))?;
        self.write_message(MessageType::Text, data).await
    }
}

impl<S: Stream> Conn<S> {
    /// Reads the next message and decodes it as JSON; see [`ReadHalf::read_json`].
    pub async fn read_json<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.reader().read_json().await
    }

    /// Sends `value` as a JSON text message; see [`WriteHalf::write_json`].
    pub async fn write_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.writer().write_json(value).await
    }
}
