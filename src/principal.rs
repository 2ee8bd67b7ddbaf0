//! Who acts: the trait that lets `audit!(actor = &p, ..)` fill the actor.

use std::borrow::Cow;

/// An actor that `audit!` can record: a user, a service, an API key.
///
/// Implement it for your application's principal type; `audit!(actor = &p,
/// ..)` then fills `actor_id`, `actor_type`, `actor_email`, `actor_name`
/// and `actor_flags` from it. Only [`id`](Principal::id) is required; it
/// gives text borrowed from the principal, or made for the occasion when
/// the id is not stored as a string (a `Uuid`, a number).
///
/// # Examples
///
/// ```
/// use std::borrow::Cow;
///
/// use fabric_audit::Principal;
///
/// struct User {
///     id: uuid::Uuid,
///     roles: Vec<String>,
/// }
///
/// impl Principal for User {
///     fn id(&self) -> Cow<'_, str> {
///         self.id.to_string().into()
///     }
///     fn kind(&self) -> Option<&str> {
///         Some("user")
///     }
///     fn flags(&self) -> &[String] {
///         &self.roles
///     }
/// }
///
/// struct ApiKey {
///     name: String,
/// }
///
/// impl Principal for ApiKey {
///     fn id(&self) -> Cow<'_, str> {
///         Cow::Borrowed(&self.name) // no copy for an id stored as text
///     }
/// }
///
/// let user = User { id: uuid::Uuid::nil(), roles: vec!["admin".into()] };
/// assert_eq!(user.id(), "00000000-0000-0000-0000-000000000000");
/// ```
pub trait Principal {
    /// The actor's stable id.
    fn id(&self) -> Cow<'_, str>;

    /// The actor's type: `user`, `service`, `api_key`, …
    fn kind(&self) -> Option<&str> {
        None
    }

    /// The actor's email address.
    fn email(&self) -> Option<&str> {
        None
    }

    /// The actor's display name.
    fn name(&self) -> Option<&str> {
        None
    }

    /// The actor's flags: roles, or markers such as `impersonated`.
    fn flags(&self) -> &[String] {
        &[]
    }
}

/// Forwards every method through a smart pointer or reference.
macro_rules! forward {
    ($($ptr:ty),+) => {$(
        impl<P: Principal + ?Sized> Principal for $ptr {
            fn id(&self) -> Cow<'_, str> {
                (**self).id()
            }
            fn kind(&self) -> Option<&str> {
                (**self).kind()
            }
            fn email(&self) -> Option<&str> {
                (**self).email()
            }
            fn name(&self) -> Option<&str> {
                (**self).name()
            }
            fn flags(&self) -> &[String] {
                (**self).flags()
            }
        }
    )+};
}

forward!(&P, Box<P>, std::sync::Arc<P>);
