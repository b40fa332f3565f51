//! Email addresses and domain names: splitting an address, and the one form domains are
//! compared in.

/// The local part and the domain of an email address, split at the last `@` (RFC 5321 local
/// parts may hold a quoted `@`). `None` when there is no `@`.
pub fn split_address(address: &str) -> Option<(&str, &str)> {
    address.rsplit_once('@')
}

/// The domain of an email address: the text after the last `@`. `None` when there is no `@`
/// or nothing after it.
pub fn address_domain(address: &str) -> Option<&str> {
    split_address(address)
        .map(|(_, domain)| domain)
        .filter(|domain| !domain.is_empty())
}

/// Lower case, without one trailing dot: the form domains are compared and cached in.
pub fn normalize_domain(domain: &str) -> String {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    trimmed.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_at_the_last_at_sign() {
        assert_eq!(
            address_domain("support@customer.example"),
            Some("customer.example")
        );
        assert_eq!(
            address_domain("\"a@b\"@customer.example"),
            Some("customer.example")
        );
        assert_eq!(address_domain("nobody"), None);
        assert_eq!(address_domain("x@"), None);
        assert_eq!(split_address("@x"), Some(("", "x")));
    }

    #[test]
    fn domains_compare_without_case_and_one_trailing_dot() {
        assert_eq!(normalize_domain("Customer.Example."), "customer.example");
        assert_eq!(normalize_domain("customer.example"), "customer.example");
        assert_eq!(normalize_domain("."), "");
    }
}
