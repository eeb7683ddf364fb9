//! Carrier slugs: one lowercase spelling per carrier, whatever the provider calls it.

/// Known carriers: `(slug, names and codes that identify it)`. Aliases are matched after
/// [`slug`] folding, so `"DHL Express"` and `"dhl-express"` both hit `dhl_express`.
/// Longer aliases are listed before shorter ones that they contain (`dhl_express` before `dhl`).
const CARRIERS: &[(&str, &[&str])] = &[
    ("dhl_express", &["dhl_express", "dhlexpress"]),
    ("dhl_ecommerce", &["dhl_ecommerce", "dhl_e_commerce"]),
    ("dhl", &["dhl", "dhl_de", "dhl_paket", "deutsche_post_dhl"]),
    ("dpd", &["dpd", "dpd_de", "dpd_fr", "dpd_nl", "dpd_at"]),
    ("ups", &["ups"]),
    ("fedex", &["fedex"]),
    ("tnt", &["tnt"]),
    (
        "gls",
        &["gls", "gls_de", "gls_nl", "gls_fr", "gls_it", "gls_es"],
    ),
    ("postnl", &["postnl", "post_nl"]),
    ("bpost", &["bpost"]),
    ("colissimo", &["colissimo", "la_poste_colissimo"]),
    ("chronopost", &["chronopost"]),
    ("mondial_relay", &["mondial_relay", "mondialrelay"]),
    ("colis_prive", &["colis_prive", "colisprive"]),
    ("relais_colis", &["relais_colis"]),
    ("hermes", &["hermes", "hermes_de", "evri"]),
    ("royal_mail", &["royal_mail", "royalmail"]),
    ("correos", &["correos"]),
    ("seur", &["seur"]),
    ("brt", &["brt", "bartolini"]),
    ("poste_italiane", &["poste_italiane", "poste_delivery"]),
    ("postnord", &["postnord"]),
    (
        "austrian_post",
        &["postat", "post_at", "austrian_post", "osterreichische_post"],
    ),
    ("swiss_post", &["swiss_post", "post_ch"]),
    ("inpost", &["inpost"]),
    ("budbee", &["budbee"]),
    ("asendia", &["asendia"]),
    ("celeritas", &["celeritas"]),
    ("usps", &["usps"]),
];

/// Folds a carrier code or name into slug form: lowercase ASCII letters and digits joined by
/// single underscores (`"Mondial Relay"` → `mondial_relay`, `"DHL-Express"` → `dhl_express`).
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = fold_accent(c);
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn fold_accent(c: char) -> char {
    match c {
        'ä' | 'à' | 'á' | 'â' | 'Ä' | 'À' | 'Á' | 'Â' => 'a',
        'ë' | 'è' | 'é' | 'ê' | 'É' | 'È' => 'e',
        'ï' | 'î' | 'í' => 'i',
        'ö' | 'ô' | 'ó' | 'Ö' => 'o',
        'ü' | 'û' | 'ú' | 'Ü' => 'u',
        _ => c,
    }
}

/// The canonical slug for a provider's carrier *code*: a known alias maps to its carrier, an
/// unknown code is kept in slug form (never dropped, never guessed). Blank input gives `None`.
///
/// ```
/// use shipfeed_core::carrier::normalize;
/// assert_eq!(normalize("PostNL").as_deref(), Some("postnl"));
/// assert_eq!(normalize("postat").as_deref(), Some("austrian_post"));
/// assert_eq!(normalize("Tiny Courier GmbH").as_deref(), Some("tiny_courier_gmbh"));
/// assert_eq!(normalize("  "), None);
/// ```
pub fn normalize(code: &str) -> Option<String> {
    let folded = slug(code);
    if folded.is_empty() {
        return None;
    }
    let known = CARRIERS
        .iter()
        .find(|(_, aliases)| aliases.contains(&folded.as_str()))
        .map(|(slug, _)| (*slug).to_owned());
    Some(known.unwrap_or(folded))
}

/// Recognizes a known carrier inside free text such as a shipping-method name
/// (`"Colissimo Domicile"` → `colissimo`). Returns `None` when no known carrier is named, so
/// that a method name is never mistaken for a carrier.
///
/// ```
/// use shipfeed_core::carrier::recognize;
/// assert_eq!(recognize("Colissimo Domicile - sans signature").as_deref(), Some("colissimo"));
/// assert_eq!(recognize("DHL Express Worldwide").as_deref(), Some("dhl_express"));
/// assert_eq!(recognize("Livraison standard"), None);
/// ```
pub fn recognize(text: &str) -> Option<String> {
    let words = slug(text);
    let padded = format!("_{words}_");
    CARRIERS
        .iter()
        .find(|(_, aliases)| aliases.iter().any(|alias| has_words(&padded, alias)))
        .map(|(slug, _)| (*slug).to_owned())
}

/// Whether `padded` (`_word_word_`) contains `_alias_`, without building that string: this
/// runs for every alias of every carrier on each delivery.
fn has_words(padded: &str, alias: &str) -> bool {
    let bytes = padded.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'_'
            && padded
                .get(i + 1..)
                .and_then(|rest| rest.strip_prefix(alias))
                .is_some_and(|after| after.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_folds_case_separators_and_accents() {
        assert_eq!(slug("  DHL--Express "), "dhl_express");
        assert_eq!(slug("Österreichische Post"), "osterreichische_post");
        assert_eq!(slug("!!!"), "");
    }

    #[test]
    fn normalize_maps_aliases_and_keeps_unknown_codes() {
        assert_eq!(normalize("dhl_de").as_deref(), Some("dhl"));
        assert_eq!(normalize("DHL Express").as_deref(), Some("dhl_express"));
        assert_eq!(normalize("gls_nl").as_deref(), Some("gls"));
        assert_eq!(normalize("sendle").as_deref(), Some("sendle"));
    }

    #[test]
    fn recognize_needs_a_whole_word() {
        assert_eq!(
            recognize("Mondial Relay Point Relais").as_deref(),
            Some("mondial_relay")
        );
        assert_eq!(recognize("UPS Standard").as_deref(), Some("ups"));
        // "ups" inside another word is not UPS.
        assert_eq!(recognize("Groupset delivery"), None);
        assert_eq!(recognize("Express DHL").as_deref(), Some("dhl"));
        assert_eq!(
            recognize("La Poste Colissimo").as_deref(),
            Some("colissimo")
        );
        assert_eq!(recognize("Post AT Paket").as_deref(), Some("austrian_post"));
        assert_eq!(recognize("upsy daisy"), None);
    }
}
