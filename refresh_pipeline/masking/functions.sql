-- SQL functions the masking engine and the PII audit call on the restored database.
-- Installed into schema refresh_pipeline by install_functions(); every function is deterministic in
-- (key, value). `key` is (k XOR ipad) || (k XOR opad) of a derived key, so hmac() below is HMAC-SHA256.

CREATE SCHEMA IF NOT EXISTS refresh_pipeline;

-- Per-refresh value map for kinds that must stay unique and never equal a production value: keyed
-- fingerprint of the normalised original -> masked value. Emptied before promotion.
CREATE TABLE IF NOT EXISTS refresh_pipeline.value_map (
    kind text NOT NULL,
    fingerprint bytea NOT NULL,
    masked text NOT NULL,
    moved_in_round int NOT NULL DEFAULT 0  -- last conflict-resolution round that gave it a new value
);
ALTER TABLE refresh_pipeline.value_map ADD COLUMN IF NOT EXISTS moved_in_round int NOT NULL DEFAULT 0;
-- Unique per (fingerprint, kind) through value_map_lookup, built once the map is filled (value_map.py).
ALTER TABLE refresh_pipeline.value_map DROP CONSTRAINT IF EXISTS value_map_pkey;

-- Fingerprints of the emails whose masked value is not their first candidate (a conflict moved them), so
-- only those need a lookup; NULL means "look every email up". Rewritten by each refresh's value map.
CREATE OR REPLACE FUNCTION refresh_pipeline.moved_emails() RETURNS bytea[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT NULL::bytea[] $$;
-- The same for UPI local parts.
CREATE OR REPLACE FUNCTION refresh_pipeline.moved_upis() RETURNS bytea[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT NULL::bytea[] $$;

-- The local part of a UPI token as the value map knows it: lower-case, the handle's part before its last
-- '@' (all of a value without one); NULL for a phone-shaped local part, which the phone map covers.
CREATE OR REPLACE FUNCTION refresh_pipeline.upi_map_key(token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(token, '@') = 0 THEN nullif(lower(token), '')
                WHEN l ~ '^(\+?91|0)?[6-9][0-9]{9}$' THEN NULL
                ELSE nullif(l, '') END
    FROM (SELECT lower(substring(token FROM '^(.*)@')) AS l) AS t
$$;

-- Masking functions are LANGUAGE sql, STABLE (convert_to is) and free of constructs that stop the
-- planner from inlining them (ARRAY[...] or CASE in a STRICT function, STABLE calls in an IMMUTABLE
-- one): inlined, a masked column is one expression per row instead of a chain of function calls.
-- PL/pgSQL is only used off the hot path (odd spellings, identifiers, free text, wildcard JSON paths).
-- The message is hashed as UTF-8, whatever the database's encoding; a SQL_ASCII database holds bytes of any
-- encoding, which convert_to(msg, 'UTF8') refuses unless they are UTF-8, so there it is hashed as stored.
DO $install$ BEGIN
EXECUTE format($hmac$
CREATE OR REPLACE FUNCTION refresh_pipeline.hmac(key bytea, msg text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT sha256(substr(key, 65, 64) || sha256(substr(key, 1, 64) || convert_to(msg, %L))) $$
$hmac$, CASE current_setting('server_encoding') WHEN 'SQL_ASCII' THEN 'SQL_ASCII' ELSE 'UTF8' END);
END $install$;

CREATE OR REPLACE FUNCTION refresh_pipeline.hmac_int(key bytea, msg text) RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT ('x' || encode(substr(refresh_pipeline.hmac(key, msg), 1, 7), 'hex'))::bit(56)::bigint $$;

-- Letters only (a-p), so a masked token never looks like a phone number to the scrubber or the audit.
CREATE OR REPLACE FUNCTION refresh_pipeline.hmac_letters(key bytea, msg text, n int) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT translate(left(encode(refresh_pipeline.hmac(key, msg), 'hex'), n), '0123456789abcdef', 'abcdefghijklmnop') $$;

-- Keyed permutation of [0, domain_size), domain_size <= 2^62: a balanced Feistel network on the
-- smallest even number of bits covering the domain, with cycle walking back into it. A bijection, so
-- unique stays unique.
CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_int(key bytea, x bigint, domain_size bigint, tweak text) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bits int := greatest(2, ceil(log(2::numeric, domain_size::numeric))::int);
    half int;
    half_mask bigint;
    l bigint;
    r bigint;
    t bigint;
    y bigint := x;
BEGIN
    IF domain_size < 1 OR x < 0 OR x >= domain_size THEN
        RAISE EXCEPTION 'fpe_int: % is outside [0, %)', x, domain_size;
    END IF;
    IF domain_size = 1 THEN
        RETURN x;
    END IF;
    bits := bits + bits % 2;
    half := bits / 2;
    half_mask := (1::bigint << half) - 1;
    LOOP
        l := y >> half;
        r := y & half_mask;
        FOR round IN 0..7 LOOP
            t := l # (refresh_pipeline.hmac_int(key, tweak || ':' || round || ':' || r) & half_mask);
            l := r;
            r := t;
        END LOOP;
        y := (l << half) | r;
        EXIT WHEN y < domain_size;
    END LOOP;
    RETURN y;
END $$;

-- Permutes a string over an alphabet (digits, letters, hex) chunk by chunk: same length, same
-- alphabet, and a bijection, so distinct inputs stay distinct.
CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_alphabet(key bytea, v text, alphabet text, tweak text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    radix int := length(alphabet);
    chunk_size int := floor(62 / log(2::numeric, length(alphabet)::numeric))::int;
    result text := '';
    chunk text;
    x bigint;
    y bigint;
    domain_size bigint;
    piece text;
BEGIN
    FOR start IN 1..length(v) BY chunk_size LOOP
        chunk := substr(v, start, chunk_size);
        x := 0;
        FOR i IN 1..length(chunk) LOOP
            x := x * radix + position(substr(chunk, i, 1) IN alphabet) - 1;
        END LOOP;
        domain_size := (radix::numeric ^ length(chunk))::bigint;
        y := refresh_pipeline.fpe_int(key, x, domain_size, tweak || ':' || radix || ':' || start || ':' || length(chunk));
        piece := '';
        FOR i IN 1..length(chunk) LOOP
            piece := substr(alphabet, (y % radix)::int + 1, 1) || piece;
            y := y / radix;
        END LOOP;
        result := result || piece;
    END LOOP;
    RETURN result;
END $$;

-- Digit strings (2-36 digits): an alternating Feistel network over the two decimal halves with addition
-- modulo 10^m (as NIST FF1 does), 8 rounds with HMAC as round function. A bijection on strings of the
-- same length without cycle walking; other lengths use the chunked permutation above.
CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_decimal(key bytea, digits text, tweak text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n int := length(digits);
    u int := length(digits) / 2;
    a bigint;
    b bigint;
    c bigint;
    m int;
BEGIN
    IF n < 2 OR n > 36 OR digits !~ '^[0-9]+$' THEN
        RETURN refresh_pipeline.fpe_alphabet(key, digits, '0123456789', tweak);
    END IF;
    a := left(digits, u)::bigint;
    b := substr(digits, u + 1)::bigint;
    FOR round IN 0..7 LOOP
        m := CASE WHEN round % 2 = 0 THEN u ELSE n - u END;
        c := (a + refresh_pipeline.hmac_int(key, tweak || ':' || n || ':' || round || ':' || b)) % (10::bigint ^ m)::bigint;
        a := b;
        b := c;
    END LOOP;
    RETURN lpad(a::text, u, '0') || lpad(b::text, n - u, '0');
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_digits(key bytea, digits text, tweak text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.fpe_decimal(key, digits, tweak) $$;

-- Any identifier: each run of digits stays digits, of upper-case letters upper-case letters, of
-- lower-case letters lower-case letters; a hex value (UUIDs, device IDs) stays hex; punctuation stays.
CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_text(key bytea, v text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    hex boolean := v ~ '^[0-9A-Fa-f:.-]+$' AND v ~ '[A-Fa-f]';
    run text;
    result text := '';
    n int := 0;
BEGIN
    FOR run IN
        SELECT m[1] FROM regexp_matches(v, CASE WHEN hex THEN '([0-9A-Fa-f]+|[^0-9A-Fa-f]+)'
                                                ELSE '([0-9]+|[A-Z]+|[a-z]+|[^0-9A-Za-z]+)' END, 'g') AS m
    LOOP
        n := n + 1;
        IF hex AND run ~ '^[0-9A-Fa-f]+$' THEN
            result := result || CASE WHEN run ~ '[A-F]' AND run !~ '[a-f]'
                THEN upper(refresh_pipeline.fpe_alphabet(key, lower(run), '0123456789abcdef', 'id:' || n))
                ELSE refresh_pipeline.fpe_alphabet(key, lower(run), '0123456789abcdef', 'id:' || n) END;
        ELSIF NOT hex AND run ~ '^[0-9]+$' THEN
            result := result || refresh_pipeline.fpe_decimal(key, run, 'id:' || n);
        ELSIF NOT hex AND run ~ '^[A-Z]+$' THEN
            result := result || refresh_pipeline.fpe_alphabet(key, run, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'id:' || n);
        ELSIF NOT hex AND run ~ '^[a-z]+$' THEN
            result := result || refresh_pipeline.fpe_alphabet(key, run, 'abcdefghijklmnopqrstuvwxyz', 'id:' || n);
        ELSE
            result := result || run;
        END IF;
    END LOOP;
    RETURN result;
END $$;

-- The keyed permutation of a national number: its first digit (the operator range) kept. A bijection,
-- so a unique column stays unique even where no value map was built.
CREATE OR REPLACE FUNCTION refresh_pipeline.phone_candidate(key bytea, nat text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN length(nat) >= 2
                THEN left(nat, 1) || refresh_pipeline.fpe_digits(key, substr(nat, 2), 'phone')
                ELSE refresh_pipeline.fpe_digits(key, nat, 'phone') END
$$;

-- The value map's key for a normalised original: keyed, so the map never holds a production value.
CREATE OR REPLACE FUNCTION refresh_pipeline.map_fingerprint(key bytea, map_kind text, normalised text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.hmac(key, 'map:' || map_kind || ':' || normalised) $$;

-- A normalised original's value-map entry; NULL when the refresh built no map or the map lacks it.
CREATE OR REPLACE FUNCTION refresh_pipeline.mapped_value(key bytea, map_kind text, normalised text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT masked FROM refresh_pipeline.value_map
    WHERE kind = map_kind AND fingerprint = refresh_pipeline.map_fingerprint(key, map_kind, normalised)
$$;

-- The national number (last 10 digits, or all when fewer): masked through the value map when the
-- refresh built one, else by the keyed permutation.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_national(key bytea, nat text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(refresh_pipeline.mapped_value(key, 'phone', nat), refresh_pipeline.phone_candidate(key, nat))
$$;

-- Replaces the digits of v, in place and in order, with `digits`; every other character is kept.
CREATE OR REPLACE FUNCTION refresh_pipeline.put_digits(v text, digits text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result text := '';
    used int := 0;
    ch text;
BEGIN
    FOREACH ch IN ARRAY regexp_split_to_array(v, '') LOOP
        IF ch BETWEEN '0' AND '9' THEN
            used := used + 1;
            result := result || substr(digits, used, 1);
        ELSE
            result := result || ch;
        END IF;
    END LOOP;
    RETURN result;
END $$;

-- The national number a phone's masked form is looked up by: its last 10 digits (all when fewer). The
-- masking query joins the value map on it (planner.py), so most phones need no lookup of their own.
CREATE OR REPLACE FUNCTION refresh_pipeline.phone_national(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT right(regexp_replace(v, '[^0-9]', '', 'g'), 10) $$;

-- Any spelling: separators stay where they are; any country code or trunk prefix stays. `mapped` as in
-- mask_phone_mapped.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_spelled_phone(key bytea, v text, mapped text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH d AS (SELECT regexp_replace(v, '[^0-9]', '', 'g') AS digits)
    SELECT refresh_pipeline.put_digits(v,
        left(digits, length(digits) - least(length(digits), 10))
        || coalesce(mapped, refresh_pipeline.mask_national(key, right(digits, least(length(digits), 10)))))
    FROM d
$$;

-- Spelling and length survive; the national number is masked, so '+91 98765 43210' and '9876543210'
-- mask alike. The common spellings need no character-by-character work. `mapped` is the value map's
-- entry for phone_national(v) when the caller has looked it up already (a join in the masking query),
-- NULL to look it up here. Every branch's national number is phone_national(v).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_phone_mapped(key bytea, v text, mapped text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v !~ '[0-9]' THEN v
        WHEN v ~ '^\+?[0-9]{10,}$'
            THEN left(v, length(v) - 10) || coalesce(mapped, refresh_pipeline.mask_national(key, right(v, 10)))
        -- '+91 98765 43210', '098765-43210': the masked national number is appended, then moved into place.
        WHEN v ~ '^(\+91[ -]?|0)?[0-9]{5}[ -]?[0-9]{5}$' THEN regexp_replace(
            v || '|' || coalesce(mapped, refresh_pipeline.mask_national(
                key, regexp_replace(v, '^.*([0-9]{5})[ -]?([0-9]{5})$', '\1\2'))),
            '^(\+91[ -]?|0)?[0-9]{5}([ -]?)[0-9]{5}\|([0-9]{5})([0-9]{5})$', '\1\3\2\4')
        ELSE refresh_pipeline.mask_spelled_phone(key, v, mapped)
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_phone(key bytea, v text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT refresh_pipeline.mask_phone_mapped(key, v, NULL) $$;

-- Upper-case letters of the original show up, position by position, in the masked local part, so
-- values that differ only in case stay different while lower(a) = lower(b) still matches.
CREATE OR REPLACE FUNCTION refresh_pipeline.apply_case(masked text, original text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    local_len int := position('@' IN masked) - 1;
    chars text[] := regexp_split_to_array(masked, '');
    ch text;
    i int := 0;
BEGIN
    IF original = lower(original) OR local_len < 1 THEN
        RETURN masked;
    END IF;
    FOREACH ch IN ARRAY regexp_split_to_array(btrim(original), '') LOOP
        IF ch <> lower(ch) THEN
            chars[i % local_len + 1] := upper(chars[i % local_len + 1]);
        END IF;
        i := i + 1;
    END LOOP;
    RETURN array_to_string(chars, '');
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.email_candidate(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.hmac_letters(key, 'email:' || normalised, 16) || '@example.com' $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.looked_up_email(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(refresh_pipeline.mapped_value(key, 'email', normalised),
                    refresh_pipeline.email_candidate(key, normalised))
$$;

-- The masked form of a normalised (trimmed, lower-case) email: its value-map entry, which is its first
-- candidate unless a conflict moved it. Free of subqueries, so it inlines; only moved emails are looked up.
CREATE OR REPLACE FUNCTION refresh_pipeline.mapped_email(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- With no email moved (the usual case) the planner folds this to the candidate: no fingerprint computed.
    SELECT CASE WHEN refresh_pipeline.moved_emails() IS NULL THEN refresh_pipeline.looked_up_email(key, normalised)
                WHEN cardinality(refresh_pipeline.moved_emails()) > 0
                 AND refresh_pipeline.map_fingerprint(key, 'email', normalised) = ANY(refresh_pipeline.moved_emails())
                THEN refresh_pipeline.looked_up_email(key, normalised)
                ELSE refresh_pipeline.email_candidate(key, normalised) END
$$;

-- Spaces around the address stay around the masked one: ' a@x.com' and 'a@x.com' are two values of a
-- unique column, and an equality join of the two fails in staging as it does in production.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_email(key bytea, v text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v = lower(v) AND v = btrim(v) THEN
            CASE WHEN v = '' THEN v ELSE refresh_pipeline.mapped_email(key, v) END
        WHEN v = btrim(v) THEN refresh_pipeline.apply_case(refresh_pipeline.mapped_email(key, lower(v)), v)
        WHEN btrim(v) = '' THEN v
        ELSE left(v, length(v) - length(ltrim(v)))
            || refresh_pipeline.apply_case(refresh_pipeline.mapped_email(key, lower(btrim(v))), btrim(v))
            || right(v, length(v) - length(rtrim(v)))
    END
$$;

-- What follows an address's last '@' (spaces around it ignored): its domain.
CREATE OR REPLACE FUNCTION refresh_pipeline.email_domain(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT substring(btrim(v) FROM '@([^@]*)$') $$;

-- `email` with keep_domain (or at a domain keep_domains lists): the masked local part at the original's own
-- domain (a work address's company, which a CHECK or the application may read: `@busco.in`); a value without
-- '@' masks as without it.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_email_at_its_domain(key bytea, v text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(v, '@') = 0 THEN m
                ELSE left(m, strpos(m, '@')) || refresh_pipeline.email_domain(v)
                     || substr(m, strpos(m, '@') + length('@example.com')) END
    FROM (SELECT refresh_pipeline.mask_email(key, v) AS m) AS masked
$$;

-- A UPI handle's local part (lower-case, not phone-shaped) as 10 keyed letters: its first candidate in the
-- value map.
CREATE OR REPLACE FUNCTION refresh_pipeline.upi_candidate(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.hmac_letters(key, 'upi:' || normalised, 10) $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.looked_up_upi(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(refresh_pipeline.mapped_value(key, 'upi', normalised), refresh_pipeline.upi_candidate(key, normalised))
$$;

-- As mapped_email: only the local parts a conflict moved are looked up.
CREATE OR REPLACE FUNCTION refresh_pipeline.mapped_upi(key bytea, normalised text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN refresh_pipeline.moved_upis() IS NULL THEN refresh_pipeline.looked_up_upi(key, normalised)
                WHEN cardinality(refresh_pipeline.moved_upis()) > 0
                 AND refresh_pipeline.map_fingerprint(key, 'upi', normalised) = ANY(refresh_pipeline.moved_upis())
                THEN refresh_pipeline.looked_up_upi(key, normalised)
                ELSE refresh_pipeline.upi_candidate(key, normalised) END
$$;

-- A UPI handle's local part: a phone-shaped one masks like that phone, anything else to its mapped letters
-- (distinct local parts stay distinct; the case is ignored, as UPI ignores it).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_upi_local(key bytea, local_part text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN local_part ~ '^(\+?91|0)?[6-9][0-9]{9}$' THEN refresh_pipeline.mask_phone(key, local_part)
                ELSE refresh_pipeline.mapped_upi(key, lower(local_part)) END
$$;

-- '<name or phone>@<bank>': the bank stays.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_upi(key bytea, v text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v = '' THEN v
        WHEN strpos(v, '@') = 0 THEN refresh_pipeline.mapped_upi(key, lower(v))
        WHEN strpos(substr(v, strpos(v, '@') + 1), '@') = 0
            THEN refresh_pipeline.mask_upi_local(key, split_part(v, '@', 1)) || '@' || split_part(v, '@', 2)
        ELSE refresh_pipeline.mask_upi_local(key, substring(v FROM '^(.*)@')) || substring(v FROM '(@[^@]*)$')
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.pick(key bytea, msg text, choices text[]) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT choices[1 + (refresh_pipeline.hmac_int(key, msg) % cardinality(choices))::int] $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_first_name(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT refresh_pipeline.pick(key, 'first:' || lower(btrim(v)), '{"Aarav","Aditi","Akash","Ananya","Arjun","Bhavna","Chetan","Deepa","Dev","Divya","Farhan","Gauri","Harsh","Isha","Jai","Kavya","Kiran","Lakshmi","Manav","Meera","Neha","Nikhil","Omkar","Pooja","Pranav","Priya","Rahul","Riya","Rohan","Sana","Sameer","Shreya","Tanvi","Tarun","Uma","Varun","Vidya","Yash","Zara","Ishaan"}'::text[])
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_last_name(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT refresh_pipeline.pick(key, 'last:' || lower(btrim(v)), '{"Acharya","Bansal","Bhat","Chatterjee","Desai","Dutta","Fernandes","Gill","Gupta","Iyer","Jain","Joshi","Kapoor","Khan","Kulkarni","Menon","Mishra","Nair","Pandey","Patel","Pillai","Rao","Reddy","Saxena","Sen","Shah","Sharma","Singh","Srinivasan","Thomas","Verma","Yadav"}'::text[])
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_name(key bytea, v text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN btrim(v) !~ '\s' THEN refresh_pipeline.mask_first_name(key, v)
        ELSE refresh_pipeline.mask_first_name(key, split_part(btrim(v), ' ', 1)) || ' '
            || refresh_pipeline.mask_last_name(key, regexp_replace(btrim(v), '^.*\s', ''))
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_address(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT (1 + refresh_pipeline.hmac_int(key, 'house:' || lower(v)) % 400)::text || ', '
        || refresh_pipeline.pick(key, 'street:' || lower(v), '{"Linking Road","Hill Road","Station Road","MG Road","Carter Road","LBS Marg","SV Road","Tilak Road","Gandhi Nagar Lane","Nehru Marg","Park Street","Lake View Road"}'::text[])
        || ', '
        || refresh_pipeline.pick(key, 'area:' || lower(v), '{"Andheri East","Bandra West","Powai","Thane West","Vashi","Borivali","Dadar","Chembur","Goregaon","Malad","Kurla","Mulund"}'::text[])
$$;

-- A name or address cut to a column's length by whole trailing words ("Lakshmi Srinivasan" -> "Lakshmi"),
-- then by characters if one word is still too long.
CREATE OR REPLACE FUNCTION refresh_pipeline.fit_words(v text, max_length int) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    WHILE length(v) > max_length AND strpos(v, ' ') > 0 LOOP
        v := regexp_replace(v, ',? +[^ ]*$', '');
    END LOOP;
    RETURN left(v, max_length);
END $$;

-- A date in the same year (or month, or band of years); the day is chosen by the key.

-- The key's pick of a day in [first_day, next_first).
CREATE OR REPLACE FUNCTION refresh_pipeline.day_between(key bytea, v date, first_day date, next_first date) RETURNS date
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT first_day + (refresh_pipeline.hmac_int(key, 'date:' || v::text) % (next_first - first_day))::int $$;

-- A date in the same year (or month, or band of years); the day is chosen by the key.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_date(key bytea, v date, keep text, band_years int) RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IS NULL OR NOT isfinite(v) THEN v
        WHEN keep = 'month' THEN refresh_pipeline.day_between(key, v, date_trunc('month', v)::date,
                                                              (date_trunc('month', v) + interval '1 month')::date)
        WHEN band_years > 1 THEN refresh_pipeline.day_between(key, v,
            make_date(extract(year FROM v)::int - ((extract(year FROM v)::int % band_years) + band_years) % band_years, 1, 1),
            make_date(extract(year FROM v)::int - ((extract(year FROM v)::int % band_years) + band_years) % band_years
                      + band_years, 1, 1))
        ELSE refresh_pipeline.day_between(key, v, make_date(extract(year FROM v)::int, 1, 1),
                                          make_date(extract(year FROM v)::int + 1, 1, 1))
    END
$$;

-- A coordinate moved deterministically by between radius_m / 2 and radius_m metres, up or down (1 degree ~
-- 111.32 km). Never by less: a column keeping fewer decimals than that would round it back to the original
-- (validation refuses columns coarser than radius_m).
CREATE OR REPLACE FUNCTION refresh_pipeline.geo_shift(u double precision, radius_m double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN u < 0.5 THEN -1 ELSE 1 END * (0.5 + abs(u * 2 - 1) * 0.5) * radius_m / 111320.0
$$;
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_geo(key bytea, v double precision, radius_m double precision)
RETURNS double precision LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT v + refresh_pipeline.geo_shift(
        refresh_pipeline.hmac_int(key, 'geo:' || v::text)::double precision / 72057594037927936.0, radius_m)
$$;

-- A number in [low, high] with the given decimals, chosen by the key from the original.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_number(key bytea, v numeric, low numeric, high numeric, decimals int)
RETURNS numeric LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT round(low + (refresh_pipeline.hmac_int(key, 'number:' || v::text)
                        % (floor((high - low) * 10 ^ decimals)::bigint + 1)) / (10 ^ decimals)::numeric, decimals)
$$;

-- PAN AAAPA9999A: the 4th letter (holder type) stays, the rest is permuted letter for letter and digit
-- for digit; anything not PAN-shaped is masked as a generic identifier.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_pan(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN v ~ '^[A-Z]{5}[0-9]{4}[A-Z]$' THEN
        (SELECT left(l, 3) || substr(v, 4, 1) || right(l, 1)
             || refresh_pipeline.fpe_alphabet(key, substr(v, 6, 4), '0123456789', 'pan:digits')
             || refresh_pipeline.fpe_alphabet(key, right(v, 1), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'pan:check')
         FROM (SELECT refresh_pipeline.fpe_alphabet(key, left(v, 3) || substr(v, 5, 1),
                                                    'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'pan:letters') AS l) AS letters)
    ELSE refresh_pipeline.fpe_text(key, v) END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.verhoeff_digit(digits text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    d int[] := '{{0,1,2,3,4,5,6,7,8,9},{1,2,3,4,0,6,7,8,9,5},{2,3,4,0,1,7,8,9,5,6},{3,4,0,1,2,8,9,5,6,7},
                 {4,0,1,2,3,9,5,6,7,8},{5,9,8,7,6,0,4,3,2,1},{6,5,9,8,7,1,0,4,3,2},{7,6,5,9,8,2,1,0,4,3},
                 {8,7,6,5,9,3,2,1,0,4},{9,8,7,6,5,4,3,2,1,0}}';
    p int[] := '{{0,1,2,3,4,5,6,7,8,9},{1,5,7,6,2,8,3,0,9,4},{5,8,0,3,7,9,6,1,4,2},{8,9,1,6,0,4,3,5,2,7},
                 {9,4,5,3,1,2,6,8,7,0},{4,2,8,6,5,7,3,9,0,1},{2,7,9,3,8,0,6,4,1,5},{7,0,4,6,9,1,3,2,5,8}}';
    inverse int[] := '{0,4,3,2,1,5,6,7,8,9}';
    c int := 0;
    n int := length(digits);
BEGIN
    FOR i IN 0..n - 1 LOOP
        c := d[c + 1][p[(i + 1) % 8 + 1][substr(digits, n - i, 1)::int + 1] + 1];
    END LOOP;
    RETURN inverse[c + 1]::text;
END $$;

-- Aadhaar: 12 digits in the original spelling; the first digit stays (2-9), the next ten are permuted and
-- the Verhoeff check digit recomputed, so masked numbers stay unique and valid-looking.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_aadhaar(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    WITH d AS (SELECT regexp_replace(v, '[^0-9]', '', 'g') AS digits)
    SELECT CASE WHEN length(digits) = 12 THEN
        (SELECT refresh_pipeline.put_digits(v, body || refresh_pipeline.verhoeff_digit(body))
         FROM (SELECT left(digits, 1) || refresh_pipeline.fpe_digits(key, substr(digits, 2, 10), 'aadhaar') AS body) AS b)
    ELSE refresh_pipeline.fpe_text(key, v) END
    FROM d
$$;

-- IPv4 -> an address in 10.0.0.0/8, IPv6 -> one in fd00::/8; a /prefix length is kept (any other text after
-- a '/', as in 'N/A', is not: it would be copied into the masked address).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_ip(key bytea, v text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    WITH h AS (SELECT encode(refresh_pipeline.hmac(key, 'ip:' || lower(regexp_replace(v, '/[0-9]{1,3}$', ''))),
                             'hex') AS x,
                      coalesce('/' || substring(v FROM '/([0-9]{1,3})$'), '') AS suffix)
    SELECT CASE WHEN v ~ '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+' THEN
        format('10.%s.%s.%s', ('x' || substr(x, 1, 2))::bit(8)::int, ('x' || substr(x, 3, 2))::bit(8)::int,
               ('x' || substr(x, 5, 2))::bit(8)::int) || suffix
    ELSE 'fd' || substr(x, 1, 2) || ':' || substr(x, 3, 4) || ':' || substr(x, 7, 4) || ':' || substr(x, 11, 4)
        || ':' || substr(x, 15, 4) || ':' || substr(x, 19, 4) || ':' || substr(x, 23, 4) || ':' || substr(x, 27, 4)
        || suffix END
    FROM h
$$;

-- refresh_pipeline.pii_pattern(): emails, UPI handles and Indian phone numbers, used by the scrubber and by
-- the audit so both see the same tokens; created before this script from PII_PATTERN (patterns.py), as are
-- its wider forms unicode_pii_pattern() and any_pii_pattern(), which `validate` also reads production with,
-- and pii_pattern_for(text), the one a text is tokenised with.

-- Cheap test before the full pattern: every email and UPI handle has an '@', every phone in any of its
-- groupings 3 digits, maybe a space or hyphen, and 3 more (dates such as 2026-11-29 do not pass).
CREATE OR REPLACE FUNCTION refresh_pipeline.may_hold_pii(v text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT strpos(v, '@') > 0 OR v ~ '[0-9]{3}[ -]?[0-9]{3}' $$;

-- Cheap test before id_pattern(): every PAN, Aadhaar and card number has 4 digits in a row.
CREATE OR REPLACE FUNCTION refresh_pipeline.may_hold_id(v text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT v ~ '[0-9]{4}' $$;

-- A token of pii_pattern() with its '@' as such: in a URL it is '%40'.
CREATE OR REPLACE FUNCTION refresh_pipeline.url_decoded_at(token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT replace(token, '%40', '@') $$;

-- A token of pii_pattern() holds at most one '@' (in a URL '%40'): an email has a '.' after it, a UPI handle
-- none. One expression, so that it inlines. (patterns.pii_kind spells it for sessions without this function.)
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_kind(token text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(token, '@') = 0 AND strpos(token, '%40') = 0 THEN 'phone'
                WHEN strpos(substr(token, greatest(strpos(token, '@'), strpos(token, '%40'))), '.') > 0 THEN 'email'
                ELSE 'upi' END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_decoded_token(key bytea, token text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE refresh_pipeline.pii_kind(token)
        WHEN 'email' THEN refresh_pipeline.mask_email(key, token)
        WHEN 'upi' THEN refresh_pipeline.mask_upi(key, token)
        ELSE refresh_pipeline.mask_phone(key, token)
    END
$$;

-- An email or UPI handle in a URL is masked as itself and encoded again: `ravi%40gmail.com` masks to the
-- same letters as `ravi@gmail.com`, followed by `%40example.com`.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_token(key bytea, token text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(token, '%40') = 0 THEN refresh_pipeline.mask_decoded_token(key, token)
                ELSE replace(refresh_pipeline.mask_decoded_token(key, refresh_pipeline.url_decoded_at(token)),
                             '@', '%40') END
$$;

-- Free text: every email, UPI handle and phone inside is replaced by its consistent masked form (in a text
-- holding a '%', also those a URL encodes; in one holding letters beyond ASCII, addresses written in them:
-- pii_pattern_for), and every PAN, Aadhaar and card number between them by a form the audit knows is none
-- (mask_ids).
-- PL/pgSQL on purpose: it keeps its plans across calls, where a SQL function holding a subquery would be
-- planned again for every value.
CREATE OR REPLACE FUNCTION refresh_pipeline.scrub(key bytea, v text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    encoded boolean := strpos(v, '%') > 0;
    ids boolean := refresh_pipeline.may_hold_id(v);
    pattern text;
    pieces text[];
    tokens text[];
    result text;
    parts text[];
BEGIN
    IF NOT (encoded OR refresh_pipeline.may_hold_pii(v)) THEN
        RETURN CASE WHEN ids THEN refresh_pipeline.mask_ids(key, v) ELSE v END;
    END IF;
    pattern := refresh_pipeline.pii_pattern_for(v);
    pieces := regexp_split_to_array(v, pattern);
    IF cardinality(pieces) = 1 THEN
        RETURN CASE WHEN ids THEN refresh_pipeline.mask_ids(key, v) ELSE v END;
    END IF;
    SELECT array_agg(m[1] ORDER BY i) INTO tokens FROM regexp_matches(v, pattern, 'g') WITH ORDINALITY AS found(m, i);
    -- Whether any piece holds one, asked once (a phone's digits made most texts pass the test above).
    ids := ids AND array_to_string(pieces, E'\n') ~ refresh_pipeline.free_text_id_pattern();
    result := CASE WHEN ids THEN refresh_pipeline.mask_ids(key, pieces[1]) ELSE pieces[1] END;
    IF cardinality(tokens) <= 32 THEN
        FOR i IN 1..cardinality(tokens) LOOP
            result := result || refresh_pipeline.mask_token(key, tokens[i])
                || CASE WHEN ids THEN refresh_pipeline.mask_ids(key, pieces[i + 1]) ELSE pieces[i + 1] END;
        END LOOP;
        RETURN result;
    END IF;
    -- Many tokens (an uploaded CSV of thousands of riders): each append to a text copies all of it, so that
    -- went quadratic (4.4 MB, 128k tokens: 41 s); appending to an array and joining once is linear (5 s).
    parts := ARRAY[result];
    FOR i IN 1..cardinality(tokens) LOOP
        parts := parts || refresh_pipeline.mask_token(key, tokens[i]);
        parts := parts || CASE WHEN ids THEN refresh_pipeline.mask_ids(key, pieces[i + 1]) ELSE pieces[i + 1] END;
    END LOOP;
    RETURN array_to_string(parts, '');
END $$;

-- The masked elements of an array (masked element by element, in storage order) given the original's shape:
-- its dimensions and lower bounds ({{a,b},{c,d}} stays 2 x 2, [0:1]={a,b} keeps index 0). The usual
-- one-dimensional array from index 1 passes through untouched.
CREATE OR REPLACE FUNCTION refresh_pipeline.array_shaped_like(masked text[], original anyarray) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    dims int := array_ndims(original);
    items text[];
    len int;
BEGIN
    IF masked IS NULL OR dims IS NULL OR (dims = 1 AND array_lower(original, 1) = 1) THEN
        RETURN masked;
    END IF;
    -- Each element as it is written inside an array literal (quoted, escaped, or NULL).
    SELECT array_agg(substr(one::text, 2, length(one::text) - 2) ORDER BY i) INTO items
    FROM unnest(masked) WITH ORDINALITY AS u(element, i), LATERAL (SELECT ARRAY[u.element] AS one) AS quoted;
    FOR d IN REVERSE dims..1 LOOP
        len := array_length(original, d);
        SELECT array_agg('{' || chunk || '}' ORDER BY g) INTO items FROM (
            SELECT (i - 1) / len AS g, string_agg(item, ',' ORDER BY i) AS chunk
            FROM unnest(items) WITH ORDINALITY AS u(item, i) GROUP BY 1) AS chunks;
    END LOOP;
    RETURN (array_dims(original) || '=' || items[1])::text[];
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.unknown_transform(transform text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RAISE EXCEPTION 'refresh_pipeline.mask_text: unknown transform %', transform;
END $$;

-- A value of ASCII spaces and punctuation only (' ', '-', '--', '.'): a form's placeholder, which
-- identifies no one. Letters and digits of any script are not in the list, so whatever else is masked.
CREATE OR REPLACE FUNCTION refresh_pipeline.is_placeholder(v text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT btrim(v, E' \t\r\n!"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~') = '' $$;

-- One entry point for every text transform (used for columns, JSON values and array elements). Called
-- with a constant transform it inlines to just that transform's expression. `mapped`: a phone's value-map
-- entry when the caller joined the map (mask_phone_mapped); other transforms ignore it.
-- The masks that shape a value (an email, a name) keep a placeholder, so staging has a blank where production
-- has one (' ' became an email; phone, scrub and the identifiers keep it anyway); hash and redact replace it.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_text_mapped(key bytea, transform text, v text, params jsonb, mapped text)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL OR v = '' THEN v
                WHEN transform IN ('email', 'upi', 'name', 'first_name', 'last_name', 'address', 'ip')
                 AND refresh_pipeline.is_placeholder(v) THEN v
                ELSE CASE transform
        -- keep_domains: only the listed domains (lower-case, as the policy leaves them); another email column
        -- pays one key test on params.
        WHEN 'email' THEN CASE WHEN coalesce((params ->> 'keep_domain')::boolean, false)
                                 OR (params ? 'keep_domains'
                                     AND params -> 'keep_domains' ? lower(refresh_pipeline.email_domain(v)))
                               THEN refresh_pipeline.mask_email_at_its_domain(key, v)
                               ELSE refresh_pipeline.mask_email(key, v) END
        -- An email or UPI handle typed into a phone field is masked as free text is, not digit by digit
        -- (which left 'rider6@gmail.com' as 'rider0@gmail.com').
        WHEN 'phone' THEN CASE WHEN strpos(v, '@') > 0 THEN refresh_pipeline.scrub(key, v)
                               ELSE refresh_pipeline.mask_phone_mapped(key, v, mapped) END
        WHEN 'upi' THEN refresh_pipeline.mask_upi(key, v)
        WHEN 'name' THEN refresh_pipeline.mask_name(key, v)
        WHEN 'first_name' THEN refresh_pipeline.mask_first_name(key, v)
        WHEN 'last_name' THEN refresh_pipeline.mask_last_name(key, v)
        WHEN 'address' THEN refresh_pipeline.mask_address(key, v)
        WHEN 'scrub' THEN refresh_pipeline.scrub(key, v)
        WHEN 'pan' THEN refresh_pipeline.mask_pan(key, v)
        WHEN 'aadhaar' THEN refresh_pipeline.mask_aadhaar(key, v)
        WHEN 'fpe' THEN refresh_pipeline.fpe_text(key, v)
        WHEN 'ip' THEN refresh_pipeline.mask_ip(key, v)
        WHEN 'hash' THEN left(encode(refresh_pipeline.hmac(key, 'hash:' || v), 'hex'),
                              coalesce((params ->> 'length')::int, 64))
        WHEN 'redact' THEN coalesce(params ->> 'value', 'REDACTED')
        ELSE refresh_pipeline.unknown_transform(transform)
    END END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_text(key bytea, transform text, v text, params jsonb) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT refresh_pipeline.mask_text_mapped(key, transform, v, params, NULL) $$;

-- A masked JSON scalar: a number stays a number when its masked form is still numeric (a phone stored
-- as a JSON number).
CREATE OR REPLACE FUNCTION refresh_pipeline.json_scalar(masked text, was_number boolean) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN was_number AND masked ~ '^-?[0-9]+(\.[0-9]+)?$' THEN to_jsonb(masked::numeric)
                ELSE coalesce(to_jsonb(masked), 'null') END
$$;

-- Masks the values a path selects; missing paths leave the document as it is. A number stays a
-- number when its masked form is still numeric (a phone stored as a JSON number).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_jsonb(key bytea, doc jsonb, steps text[], transform text, params jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    head text;
    rest text[];
BEGIN
    IF doc IS NULL THEN
        RETURN NULL;
    END IF;
    IF coalesce(cardinality(steps), 0) = 0 THEN
        CASE jsonb_typeof(doc)
            WHEN 'string', 'number' THEN
                RETURN refresh_pipeline.json_scalar(refresh_pipeline.mask_text(key, transform, doc #>> '{}', params),
                                                    jsonb_typeof(doc) = 'number');
            WHEN 'array' THEN
                RETURN (SELECT coalesce(jsonb_agg(refresh_pipeline.mask_jsonb(key, e, steps, transform, params) ORDER BY i), '[]')
                        FROM jsonb_array_elements(doc) WITH ORDINALITY AS x(e, i));
            WHEN 'object' THEN
                RETURN (SELECT coalesce(jsonb_object_agg(k, refresh_pipeline.mask_jsonb(key, e, steps, transform, params)), '{}')
                        FROM jsonb_each(doc) AS x(k, e));
            ELSE
                RETURN doc;
        END CASE;
    END IF;
    head := steps[1];
    rest := steps[2:];
    IF head = '*' THEN
        IF jsonb_typeof(doc) = 'array' THEN
            RETURN (SELECT coalesce(jsonb_agg(refresh_pipeline.mask_jsonb(key, e, rest, transform, params) ORDER BY i), '[]')
                    FROM jsonb_array_elements(doc) WITH ORDINALITY AS x(e, i));
        ELSIF jsonb_typeof(doc) = 'object' THEN
            RETURN (SELECT coalesce(jsonb_object_agg(k, refresh_pipeline.mask_jsonb(key, e, rest, transform, params)), '{}')
                    FROM jsonb_each(doc) AS x(k, e));
        END IF;
        RETURN doc;
    END IF;
    IF jsonb_typeof(doc) = 'object' AND doc ? head THEN
        RETURN jsonb_set(doc, ARRAY[head], refresh_pipeline.mask_jsonb(key, doc -> head, rest, transform, params));
    END IF;
    IF jsonb_typeof(doc) = 'array' AND head ~ '^[0-9]+$' AND head::int < jsonb_array_length(doc) THEN
        RETURN jsonb_set(doc, ARRAY[head], refresh_pipeline.mask_jsonb(key, doc -> head::int, rest, transform, params));
    END IF;
    RETURN doc;
END $$;

-- The masked form of the value one path selects (a scalar, or everything below an object or array);
-- NULL when there is nothing to mask, so jsonb_set_lax(..., 'return_target') leaves the document as is.
-- `mapped` as in mask_text_mapped.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_json_value_mapped(
    key bytea, value jsonb, transform text, params jsonb, mapped text
) RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
        -- json_scalar(masked, false), spelled out: masked is mentioned once, so this inlines.
        WHEN 'string' THEN coalesce(
            to_jsonb(refresh_pipeline.mask_text_mapped(key, transform, value #>> '{}', params, mapped)), 'null')
        WHEN 'number' THEN
            refresh_pipeline.json_scalar(
                refresh_pipeline.mask_text_mapped(key, transform, value #>> '{}', params, mapped), true)
        WHEN 'object' THEN refresh_pipeline.mask_jsonb(key, value, '{}', transform, params)
        WHEN 'array' THEN refresh_pipeline.mask_jsonb(key, value, '{}', transform, params)
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_json_value(key bytea, value jsonb, transform text, params jsonb)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT refresh_pipeline.mask_json_value_mapped(key, value, transform, params, NULL) $$;

-- The PII tokens of a text, normalised so that every spelling of one value compares equal; a UPI
-- handle whose local part is a phone also yields that phone.
-- Not STRICT, so the planner can inline it into the caller's FROM (a strict set-returning function
-- is called row by row).
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_tokens(v text) RETURNS TABLE(kind text, token text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH found AS (  -- what pii_pattern_for finds; a URL's '%40' read as '@'
        SELECT refresh_pipeline.url_decoded_at(m[1]) AS t, refresh_pipeline.pii_kind(m[1]) AS k
        FROM regexp_matches(
            CASE WHEN strpos(v, '%') > 0 OR refresh_pipeline.may_hold_pii(v) THEN v ELSE '' END,
            refresh_pipeline.pii_pattern_for(v),
            'g') AS m
    )
    -- A phone token ends in its 10 national digits (before them '+', ' ', '-', a URL's '%2B', a country code).
    SELECT k, CASE k WHEN 'phone' THEN right(translate(t, '+- ', ''), 10) ELSE lower(t) END FROM found
    UNION ALL
    SELECT 'phone', right(translate(split_part(t, '@', 1), '+- ', ''), 10)
    FROM found WHERE k = 'upi' AND split_part(t, '@', 1) ~ '^(\+?91|0)?[6-9][0-9]{9}$'
$$;

CREATE TABLE IF NOT EXISTS refresh_pipeline.masked_tables (
    table_name text PRIMARY KEY,
    policy_digest text NOT NULL,
    rows_masked bigint NOT NULL,
    masked_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_row_counts (
    table_name text PRIMARY KEY,
    row_count bigint NOT NULL
);

-- ---------------------------------------------------------------------------------------------------
-- PII detectors for the audit.

-- The Luhn sum of a card number's digits, every second one from the right doubled: valid when it ends in 0.
CREATE OR REPLACE FUNCTION refresh_pipeline.luhn_sum(digits text) RETURNS int
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    total int := 0;
    d int;
    n int := length(digits);
BEGIN
    FOR i IN 0..n - 1 LOOP
        d := substr(digits, n - i, 1)::int;
        IF i % 2 = 1 THEN
            d := d * 2;
            IF d > 9 THEN
                d := d - 9;
            END IF;
        END IF;
        total := total + d;
    END LOOP;
    RETURN total;
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.luhn_valid(digits text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT refresh_pipeline.luhn_sum(digits) % 10 = 0 $$;

-- Aadhaar numbers carry a Verhoeff check digit; testing it keeps random 12-digit numbers out.
CREATE OR REPLACE FUNCTION refresh_pipeline.verhoeff_valid(digits text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    d int[] := '{{0,1,2,3,4,5,6,7,8,9},{1,2,3,4,0,6,7,8,9,5},{2,3,4,0,1,7,8,9,5,6},{3,4,0,1,2,8,9,5,6,7},
                 {4,0,1,2,3,9,5,6,7,8},{5,9,8,7,6,0,4,3,2,1},{6,5,9,8,7,1,0,4,3,2},{7,6,5,9,8,2,1,0,4,3},
                 {8,7,6,5,9,3,2,1,0,4},{9,8,7,6,5,4,3,2,1,0}}';
    p int[] := '{{0,1,2,3,4,5,6,7,8,9},{1,5,7,6,2,8,3,0,9,4},{5,8,0,3,7,9,6,1,4,2},{8,9,1,6,0,4,3,5,2,7},
                 {9,4,5,3,1,2,6,8,7,0},{4,2,8,6,5,7,3,9,0,1},{2,7,9,3,8,0,6,4,1,5},{7,0,4,6,9,1,3,2,5,8}}';
    c int := 0;
    n int := length(digits);
BEGIN
    FOR i IN 0..n - 1 LOOP
        c := d[c + 1][p[i % 8 + 1][substr(digits, n - i, 1)::int + 1] + 1];
    END LOOP;
    RETURN c = 0;
END $$;

-- What an Aadhaar or card number is tokenised as: a run of 12 to 19 digits (single spaces or hyphens between them
-- allowed), the longest one from the leftmost start.
CREATE OR REPLACE FUNCTION refresh_pipeline.id_digit_run() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '(?<![0-9])(?:[0-9][ -]?){11,18}[0-9](?![0-9])' $$;

-- Identity numbers in a kept column's text, tokenised once for the audit: an upper-case PAN, or a digit run.
CREATE OR REPLACE FUNCTION refresh_pipeline.id_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '(?<![A-Za-z0-9])[A-Z]{3}[ABCFGHLJPT][A-Z][0-9]{4}[A-Z](?![A-Za-z0-9])|' || refresh_pipeline.id_digit_run()
$$;

-- id_pattern() with PANs in any case, for free text (scrub, and the audit of scrubbed columns), where people type
-- theirs lower-case (`pan abcpe1234f`). Not for kept columns: there a lower-case one is as likely a username
-- (kumar1234a), and the audit would stop the refresh for it; scrub masking one is harmless.
CREATE OR REPLACE FUNCTION refresh_pipeline.free_text_id_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '(?<![A-Za-z0-9])[A-Za-z]{3}[ABCFGHLJPTabcfghljpt][A-Za-z][0-9]{4}[A-Za-z](?![A-Za-z0-9])|'
        || refresh_pipeline.id_digit_run()
$$;

-- What a token of id_pattern() or free_text_id_pattern() is: 'pan' (its shape says so), 'aadhaar' (12 digits as
-- 4-4-4 or in one run, Verhoeff-valid), 'card' (13 to 19 digits, Luhn-valid), or NULL (a number identifying no one).
CREATE OR REPLACE FUNCTION refresh_pipeline.id_kind(token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN token ~ '^[A-Za-z]' THEN 'pan'
                WHEN token ~ '^[2-9][0-9]{3}[ -]?[0-9]{4}[ -]?[0-9]{4}$' AND refresh_pipeline.verhoeff_valid(digits)
                    THEN 'aadhaar'
                WHEN length(digits) >= 13 AND refresh_pipeline.luhn_valid(digits) THEN 'card' END
    FROM (SELECT regexp_replace(token, '[^0-9]', '', 'g') AS digits) AS d
$$;

-- Identity numbers in a text, as `pattern` (id_pattern() or free_text_id_pattern()) reads them: PAN numbers,
-- Aadhaar numbers, card numbers (id_kind), normalised (a PAN upper-case, a number its digits only).
CREATE OR REPLACE FUNCTION refresh_pipeline.id_findings(v text, pattern text) RETURNS TABLE(detector text, token text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT kind, CASE kind WHEN 'pan' THEN upper(t) ELSE regexp_replace(t, '[^0-9]', '', 'g') END
    FROM (SELECT m[1] AS t, refresh_pipeline.id_kind(m[1]) AS kind
          FROM regexp_matches(CASE WHEN refresh_pipeline.may_hold_id(v) THEN v ELSE '' END, pattern, 'g') AS m
         ) AS found
    WHERE kind IS NOT NULL
$$;

-- Those of a kept column's text.
CREATE OR REPLACE FUNCTION refresh_pipeline.id_findings(v text) RETURNS TABLE(detector text, token text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT * FROM refresh_pipeline.id_findings(v, refresh_pipeline.id_pattern()) $$;

-- The identity numbers scrub masks in a text: those of its pieces between its emails, UPI handles and phones.
-- The pieces of a scrubbed text are the masked pieces of the original (masked tokens are tokens alike).
CREATE OR REPLACE FUNCTION refresh_pipeline.scrubbed_id_findings(v text) RETURNS TABLE(detector text, token text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT f.detector, f.token
    FROM unnest(CASE WHEN refresh_pipeline.may_hold_id(v)
                     THEN regexp_split_to_array(v, refresh_pipeline.pii_pattern_for(v)) END)
             AS p(piece),
         LATERAL refresh_pipeline.id_findings(p.piece, refresh_pipeline.free_text_id_pattern()) AS f
$$;

-- `body` followed by a digit its check (Verhoeff for 'aadhaar', else Luhn) fails with: the one digit it
-- passes with, plus 1 (computed: trying digits until one fails took 100 us a number).
CREATE OR REPLACE FUNCTION refresh_pipeline.failing_check(body text, kind text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT body || CASE kind WHEN 'aadhaar' THEN (refresh_pipeline.verhoeff_digit(body)::int + 1) % 10
                             ELSE (11 - refresh_pipeline.luhn_sum(body || '0') % 10) % 10 END
$$;

-- `masked` (as long as `original`) with each letter in the case of the original's letter at its place.
CREATE OR REPLACE FUNCTION refresh_pipeline.case_like(masked text, original text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN original = upper(original) THEN masked
        ELSE (SELECT string_agg(CASE WHEN o = upper(o) THEN m ELSE lower(m) END, '' ORDER BY i)
              FROM generate_series(1, length(masked)) AS i,
                   LATERAL (SELECT substr(original, i, 1) AS o, substr(masked, i, 1) AS m) AS letters) END
$$;

-- A token of free_text_id_pattern() masked for free text, so that it identifies no one and id_kind() no longer
-- knows it (the audit looks for identity numbers in scrubbed text too): a PAN as `pan` masks it but for its 4th letter,
-- X, which no holder type is; an Aadhaar number's first digit kept, ten permuted and a check digit that fails; a
-- card number's first digit (its network) kept, the others but the last permuted, and a last digit that fails
-- Luhn. Spaces and hyphens stay; never a leading 0, which a number stored as a JSON number would lose. A PAN
-- typed in lower case is masked as its upper-case spelling, each letter then in the original's case.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_id(key bytea, token text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE refresh_pipeline.id_kind(token)
        WHEN 'pan' THEN refresh_pipeline.case_like(
            overlay(refresh_pipeline.mask_pan(key, upper(token)) PLACING 'X' FROM 4 FOR 1), token)
        WHEN 'aadhaar' THEN refresh_pipeline.put_digits(token, refresh_pipeline.failing_check(
            left(digits, 1) || refresh_pipeline.fpe_digits(key, substr(digits, 2, 10), 'aadhaar'), 'aadhaar'))
        WHEN 'card' THEN refresh_pipeline.put_digits(token, refresh_pipeline.failing_check(
            left(digits, 1) || refresh_pipeline.fpe_digits(key, substr(digits, 2, length(digits) - 2), 'card'), 'card'))
        ELSE token END
    FROM (SELECT regexp_replace(token, '[^0-9]', '', 'g') AS digits) AS d
$$;

-- A piece of free text (between its emails, UPI handles and phones) with its identity numbers masked (mask_id).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_ids(key bytea, v text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    pieces text[];
    parts text[];
    i int := 1;
    token text[];
BEGIN
    IF NOT refresh_pipeline.may_hold_id(v) THEN
        RETURN v;
    END IF;
    pieces := regexp_split_to_array(v, refresh_pipeline.free_text_id_pattern());
    IF cardinality(pieces) = 1 THEN
        RETURN v;
    END IF;
    parts := ARRAY[pieces[1]];
    FOR token IN SELECT m FROM regexp_matches(v, refresh_pipeline.free_text_id_pattern(), 'g') AS m LOOP
        i := i + 1;
        parts := parts || refresh_pipeline.mask_id(key, token[1]) || pieces[i];
    END LOOP;
    RETURN array_to_string(parts, '');
END $$;

-- Every PII-shaped token of a text, by detector: emails, UPI handles and Indian mobiles (as pii_tokens)
-- and identity numbers (as id_findings).
CREATE OR REPLACE FUNCTION refresh_pipeline.pattern_findings(v text) RETURNS TABLE(detector text, token text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT kind, token FROM refresh_pipeline.pii_tokens(v)
    UNION ALL
    SELECT detector, token FROM refresh_pipeline.id_findings(v)
$$;

-- ---------------------------------------------------------------------------------------------------
-- What the restored database looked like before masking, for the integrity check.

CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_constraints (
    table_name text NOT NULL,
    constraint_name text NOT NULL,
    definition text NOT NULL,
    PRIMARY KEY (table_name, constraint_name)
);

CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_indexes (
    index_name text PRIMARY KEY,
    definition text NOT NULL
);

CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_sequences (
    sequence_name text PRIMARY KEY,
    last_value bigint,
    is_called boolean
);

CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_comments (
    object_name text PRIMARY KEY,
    comment text NOT NULL
);

-- Rows breaking a constraint production added NOT VALID, as restored: production's own, not the masking's.
CREATE TABLE IF NOT EXISTS refresh_pipeline.restored_violations (
    constraint_name text PRIMARY KEY,  -- '<table> <constraint>'
    violations bigint NOT NULL
);

-- Whether a path selects any value in doc, following exactly the steps mask_jsonb follows.
CREATE OR REPLACE FUNCTION refresh_pipeline.jsonb_path_selects(doc jsonb, steps text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    head text;
    rest text[];
BEGIN
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    IF coalesce(cardinality(steps), 0) = 0 THEN
        RETURN jsonb_typeof(doc) <> 'null';
    END IF;
    head := steps[1];
    rest := steps[2:];
    IF head = '*' THEN
        IF jsonb_typeof(doc) = 'array' THEN
            RETURN EXISTS (SELECT 1 FROM jsonb_array_elements(doc) AS e(v)
                           WHERE refresh_pipeline.jsonb_path_selects(e.v, rest));
        ELSIF jsonb_typeof(doc) = 'object' THEN
            RETURN EXISTS (SELECT 1 FROM jsonb_each(doc) AS e(k, v) WHERE refresh_pipeline.jsonb_path_selects(e.v, rest));
        END IF;
        RETURN false;
    END IF;
    IF jsonb_typeof(doc) = 'object' AND doc ? head THEN
        RETURN refresh_pipeline.jsonb_path_selects(doc -> head, rest);
    END IF;
    IF jsonb_typeof(doc) = 'array' AND head ~ '^[0-9]+$' AND head::int < jsonb_array_length(doc) THEN
        RETURN refresh_pipeline.jsonb_path_selects(doc -> head::int, rest);
    END IF;
    RETURN false;
END $$;

-- PostGIS locations, only where the database has PostGIS (its types and functions live in the extension's
-- schema, written out in full: a function-level search_path would cost a third of the masking time).
-- The whole geometry moves by one offset, so a line or a polygon keeps its shape: a keyed direction and a
-- keyed distance between radius_m / 2 and radius_m, in metres on the ground. Degrees for longitude/latitude
-- SRIDs (and SRID 0 whose coordinates are within longitude/latitude bounds), else the SRID's linear units.
-- The error names the SRID only, never a coordinate.
DO $install$
DECLARE
    postgis name := (SELECT extnamespace::regnamespace::name FROM pg_extension WHERE extname = 'postgis');
BEGIN
    IF postgis IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format($geometry$
-- An SRID's units per metre on the ground: 0 for degrees (longitude/latitude), NULL when unknown (SRID 0 too).
CREATE OR REPLACE FUNCTION refresh_pipeline.location_units(srid int) RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN r.proj4text LIKE '%%+proj=longlat%%' OR r.srtext LIKE 'GEOG%%' THEN 0
        WHEN r.proj4text ~ '\+units=m( |$)' THEN 1
        WHEN r.proj4text ~ '\+units=us-ft( |$)' THEN 3937.0 / 1200
        WHEN r.proj4text ~ '\+units=ft( |$)' THEN 1 / 0.3048
    END
    FROM %1$I.spatial_ref_sys AS r WHERE r.srid = $1
$$;

-- `units` is location_units() of the column's SRID when its type fixes one (computed once per statement);
-- NULL looks it up per row. Not STRICT, since units may be NULL.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_location(
    key bytea, g %1$I.geometry, radius_m double precision, units double precision DEFAULT NULL
) RETURNS %1$I.geometry LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    h bytea := refresh_pipeline.hmac(key, 'location:' || encode(%1$I.bytea(g), 'hex'));
    angle double precision := 2 * pi() * (('x' || encode(substr(h, 1, 7), 'hex'))::bit(56)::bigint / 72057594037927936.0);
    metres double precision := radius_m
        * (0.5 + 0.5 * (('x' || encode(substr(h, 8, 7), 'hex'))::bit(56)::bigint / 72057594037927936.0));
    srid int := %1$I.ST_SRID(g);
BEGIN
    IF g IS NULL OR %1$I.ST_IsEmpty(g) THEN
        RETURN g;
    END IF;
    units := coalesce(units, refresh_pipeline.location_units(srid));
    IF units IS NULL AND srid = 0 AND %1$I.ST_XMin(g) >= -180 AND %1$I.ST_XMax(g) <= 180
       AND %1$I.ST_YMin(g) >= -90 AND %1$I.ST_YMax(g) <= 90 THEN
        units := 0;
    END IF;
    IF units IS NULL THEN
        RAISE EXCEPTION 'geo cannot move a geometry of SRID %%: its units are not degrees, metres or feet%%',
            srid, CASE WHEN srid = 0 THEN ' (SRID 0 outside longitude/latitude bounds: set its SRID)' ELSE '' END;
    END IF;
    IF units = 0 THEN
        RETURN %1$I.ST_Translate(g,
            metres * cos(angle) / (111320.0 * greatest(cos(radians(%1$I.ST_Y(%1$I.ST_Centroid(g)))), 0.01)),
            metres * sin(angle) / 111320.0);
    END IF;
    RETURN %1$I.ST_Translate(g, metres * cos(angle) * units, metres * sin(angle) * units);
END $$;

-- A geography is always longitude/latitude.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_location(key bytea, g %1$I.geography, radius_m double precision)
RETURNS %1$I.geography LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.mask_location(key, g::%1$I.geometry, radius_m, 0)::%1$I.geography $$;

-- A location as the audit fingerprints it: hex EWKB, the same for a geography copy of a geometry point;
-- an EMPTY geometry is no location.
CREATE OR REPLACE FUNCTION refresh_pipeline.location_hex(g %1$I.geometry) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT CASE WHEN %1$I.ST_IsEmpty(g) THEN NULL ELSE encode(%1$I.bytea(g), 'hex') END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.location_hex(g %1$I.geography) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT refresh_pipeline.location_hex(g::%1$I.geometry) $$;

-- How a location is written in the policy's allowlist: lower-case WKT, e.g. 'point(72.8777 19.076)'.
CREATE OR REPLACE FUNCTION refresh_pipeline.location_text(g %1$I.geometry) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT lower(%1$I.ST_AsText(g)) $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.location_text(g %1$I.geography) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT lower(%1$I.ST_AsText(g)) $$;
$geometry$, postgis);
END $install$;
