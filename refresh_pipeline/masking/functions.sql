-- SQL functions the masking engine and the PII audit call on the restored database.
-- Installed into schema refresh_pipeline by install_functions(); every function is deterministic in
-- (key, value). `key` is (k XOR ipad) || (k XOR opad) of a derived key, so hmac() below is HMAC-SHA256.

CREATE SCHEMA IF NOT EXISTS refresh_pipeline;

CREATE OR REPLACE FUNCTION refresh_pipeline.hmac(key bytea, msg text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT sha256(substr(key, 65, 64) || sha256(substr(key, 1, 64) || convert_to(msg, 'UTF8'))) $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.hmac_int(key bytea, msg text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ('x' || encode(substr(refresh_pipeline.hmac(key, msg), 1, 7), 'hex'))::bit(56)::bigint $$;

-- Letters only (a-p), so a masked token never looks like a phone number to the scrubber or the audit.
CREATE OR REPLACE FUNCTION refresh_pipeline.hmac_letters(key bytea, msg text, n int) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT translate(left(encode(refresh_pipeline.hmac(key, msg), 'hex'), n), '0123456789abcdef', 'abcdefghijklmnop') $$;

-- Keyed permutation of [0, 10^n), n <= 18: a balanced Feistel network on the smallest even number of
-- bits covering 10^n, with cycle walking back into the domain. A bijection, so unique stays unique.
CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_number(key bytea, x bigint, n int, tweak text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    domain_size bigint := (10::numeric ^ n)::bigint;
    bits int := ceil(n * log(2::numeric, 10::numeric))::int;
    half int;
    half_mask bigint;
    l bigint;
    r bigint;
    t bigint;
    y bigint := x;
BEGIN
    IF n < 1 OR n > 18 OR x < 0 OR x >= domain_size THEN
        RAISE EXCEPTION 'fpe_number: % is outside [0, 10^%)', x, n;
    END IF;
    bits := bits + bits % 2;
    half := bits / 2;
    half_mask := (1::bigint << half) - 1;
    LOOP
        l := y >> half;
        r := y & half_mask;
        FOR round IN 0..7 LOOP
            t := l # (refresh_pipeline.hmac_int(key, tweak || ':' || n || ':' || round || ':' || r) & half_mask);
            l := r;
            r := t;
        END LOOP;
        y := (l << half) | r;
        EXIT WHEN y < domain_size;
    END LOOP;
    RETURN y;
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.fpe_digits(key bytea, digits text, tweak text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result text := '';
    chunk text;
BEGIN
    FOR start IN 1..length(digits) BY 18 LOOP
        chunk := substr(digits, start, 18);
        result := result || lpad(
            refresh_pipeline.fpe_number(key, chunk::bigint, length(chunk), tweak || ':' || start)::text,
            length(chunk), '0');
    END LOOP;
    RETURN result;
END $$;

-- Digits are replaced in place, every other character kept, so the spelling and length survive. The
-- national number is the last 10 digits: its first digit (operator range) and any country code or
-- trunk prefix stay, the rest is permuted. '+91 98765 43210' and '9876543210' mask alike.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_phone(key bytea, v text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    digits text := regexp_replace(v, '[^0-9]', '', 'g');
    digit_count int := length(regexp_replace(v, '[^0-9]', '', 'g'));
    national_len int := least(length(regexp_replace(v, '[^0-9]', '', 'g')), 10);
    masked text;
    result text := '';
    used int := 0;
    ch text;
BEGIN
    IF digit_count = 0 THEN
        RETURN v;
    ELSIF national_len >= 2 THEN
        masked := left(digits, digit_count - national_len + 1)
            || refresh_pipeline.fpe_digits(key, right(digits, national_len - 1), 'phone');
    ELSE
        masked := refresh_pipeline.fpe_digits(key, digits, 'phone');
    END IF;
    FOREACH ch IN ARRAY regexp_split_to_array(v, '') LOOP
        IF ch BETWEEN '0' AND '9' THEN
            used := used + 1;
            result := result || substr(masked, used, 1);
        ELSE
            result := result || ch;
        END IF;
    END LOOP;
    RETURN result;
END $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_email(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT refresh_pipeline.hmac_letters(key, 'email:' || lower(btrim(v)), 16) || '@example.com' $$;

-- '<name or phone>@<bank>': the bank stays; a phone-shaped local part masks like that phone.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_upi(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN position('@' IN v) = 0 THEN refresh_pipeline.hmac_letters(key, 'upi:' || lower(v), 10)
        WHEN substring(v FROM '^(.*)@') ~ '^(\+?91|0)?[6-9][0-9]{9}$'
            THEN refresh_pipeline.mask_phone(key, substring(v FROM '^(.*)@')) || substring(v FROM '(@[^@]*)$')
        ELSE refresh_pipeline.hmac_letters(key, 'upi:' || lower(substring(v FROM '^(.*)@')), 10)
            || substring(v FROM '(@[^@]*)$')
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.pick(key bytea, msg text, choices text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT choices[1 + (refresh_pipeline.hmac_int(key, msg) % cardinality(choices))::int] $$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_first_name(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT refresh_pipeline.pick(key, 'first:' || lower(btrim(v)), ARRAY[
        'Aarav', 'Aditi', 'Akash', 'Ananya', 'Arjun', 'Bhavna', 'Chetan', 'Deepa', 'Dev', 'Divya', 'Farhan',
        'Gauri', 'Harsh', 'Isha', 'Jai', 'Kavya', 'Kiran', 'Lakshmi', 'Manav', 'Meera', 'Neha', 'Nikhil',
        'Omkar', 'Pooja', 'Pranav', 'Priya', 'Rahul', 'Riya', 'Rohan', 'Sana', 'Sameer', 'Shreya', 'Tanvi',
        'Tarun', 'Uma', 'Varun', 'Vidya', 'Yash', 'Zara', 'Ishaan'])
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_last_name(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT refresh_pipeline.pick(key, 'last:' || lower(btrim(v)), ARRAY[
        'Acharya', 'Bansal', 'Bhat', 'Chatterjee', 'Desai', 'Dutta', 'Fernandes', 'Gill', 'Gupta', 'Iyer',
        'Jain', 'Joshi', 'Kapoor', 'Khan', 'Kulkarni', 'Menon', 'Mishra', 'Nair', 'Pandey', 'Patel', 'Pillai',
        'Rao', 'Reddy', 'Saxena', 'Sen', 'Shah', 'Sharma', 'Singh', 'Srinivasan', 'Thomas', 'Verma', 'Yadav'])
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_name(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN btrim(v) !~ '\s' THEN refresh_pipeline.mask_first_name(key, v)
        ELSE refresh_pipeline.mask_first_name(key, split_part(btrim(v), ' ', 1)) || ' '
            || refresh_pipeline.mask_last_name(key, regexp_replace(btrim(v), '^.*\s', ''))
    END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_address(key bytea, v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (1 + refresh_pipeline.hmac_int(key, 'house:' || lower(v)) % 400)::text || ', '
        || refresh_pipeline.pick(key, 'street:' || lower(v), ARRAY[
            'Linking Road', 'Hill Road', 'Station Road', 'MG Road', 'Carter Road', 'LBS Marg', 'SV Road',
            'Tilak Road', 'Gandhi Nagar Lane', 'Nehru Marg', 'Park Street', 'Lake View Road'])
        || ', '
        || refresh_pipeline.pick(key, 'area:' || lower(v), ARRAY[
            'Andheri East', 'Bandra West', 'Powai', 'Thane West', 'Vashi', 'Borivali', 'Dadar', 'Chembur',
            'Goregaon', 'Malad', 'Kurla', 'Mulund'])
$$;

-- Same year; the day within it is chosen by the key.
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_date(key bytea, v date) RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN NOT isfinite(v) THEN v ELSE
        make_date(extract(year FROM v)::int, 1, 1)
        + (refresh_pipeline.hmac_int(key, 'date:' || v::text)
           % (make_date(extract(year FROM v)::int + 1, 1, 1) - make_date(extract(year FROM v)::int, 1, 1)))::int
    END
$$;

-- Emails, UPI handles and Indian phone numbers in any common spelling, as one pattern without capture
-- groups; used by the scrubber and by the audit so both see the same tokens.
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+'
        || '|[A-Za-z0-9._-]+@[A-Za-z]{2,}(?![A-Za-z0-9])'
        || '|(?<![0-9A-Za-z+])(?:\+91[ -]?|0)?[6-9][0-9]{4}[ -]?[0-9]{5}(?![0-9A-Za-z])'
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.pii_kind(token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN token ~ '@[^@]*\.' THEN 'email' WHEN position('@' IN token) > 0 THEN 'upi' ELSE 'phone' END
$$;

CREATE OR REPLACE FUNCTION refresh_pipeline.mask_token(key bytea, token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE refresh_pipeline.pii_kind(token)
        WHEN 'email' THEN refresh_pipeline.mask_email(key, token)
        WHEN 'upi' THEN refresh_pipeline.mask_upi(key, token)
        ELSE refresh_pipeline.mask_phone(key, token)
    END
$$;

-- Free text: every email, UPI handle and phone inside is replaced by its consistent masked form.
CREATE OR REPLACE FUNCTION refresh_pipeline.scrub(key bytea, v text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    pieces text[] := regexp_split_to_array(v, refresh_pipeline.pii_pattern());
    tokens text[];
    result text;
BEGIN
    IF cardinality(pieces) = 1 THEN
        RETURN v;
    END IF;
    SELECT array_agg(m[1] ORDER BY i) INTO tokens
    FROM regexp_matches(v, '(' || refresh_pipeline.pii_pattern() || ')', 'g') WITH ORDINALITY AS found(m, i);
    result := pieces[1];
    FOR i IN 1..cardinality(tokens) LOOP
        result := result || refresh_pipeline.mask_token(key, tokens[i]) || pieces[i + 1];
    END LOOP;
    RETURN result;
END $$;

-- One entry point for every text transform (used for columns, JSON values and array elements).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_text(key bytea, transform text, v text, params jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN v;
    END IF;
    CASE transform
        WHEN 'email' THEN RETURN refresh_pipeline.mask_email(key, v);
        WHEN 'phone' THEN RETURN refresh_pipeline.mask_phone(key, v);
        WHEN 'upi' THEN RETURN refresh_pipeline.mask_upi(key, v);
        WHEN 'name' THEN RETURN refresh_pipeline.mask_name(key, v);
        WHEN 'first_name' THEN RETURN refresh_pipeline.mask_first_name(key, v);
        WHEN 'last_name' THEN RETURN refresh_pipeline.mask_last_name(key, v);
        WHEN 'address' THEN RETURN refresh_pipeline.mask_address(key, v);
        WHEN 'scrub' THEN RETURN refresh_pipeline.scrub(key, v);
        WHEN 'hash' THEN
            RETURN left(encode(refresh_pipeline.hmac(key, 'hash:' || v), 'hex'), coalesce((params ->> 'length')::int, 64));
        WHEN 'redact' THEN RETURN coalesce(params ->> 'value', 'REDACTED');
        ELSE RAISE EXCEPTION 'refresh_pipeline.mask_text: unknown transform %', transform;
    END CASE;
END $$;

-- Masks the values a path selects; missing paths leave the document as it is. A number stays a
-- number when its masked form is still numeric (a phone stored as a JSON number).
CREATE OR REPLACE FUNCTION refresh_pipeline.mask_jsonb(key bytea, doc jsonb, steps text[], transform text, params jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    masked text;
    head text;
    rest text[];
BEGIN
    IF doc IS NULL THEN
        RETURN NULL;
    END IF;
    IF coalesce(cardinality(steps), 0) = 0 THEN
        CASE jsonb_typeof(doc)
            WHEN 'string' THEN
                RETURN coalesce(to_jsonb(refresh_pipeline.mask_text(key, transform, doc #>> '{}', params)), 'null');
            WHEN 'number' THEN
                masked := refresh_pipeline.mask_text(key, transform, doc #>> '{}', params);
                IF masked ~ '^-?[0-9]+(\.[0-9]+)?$' THEN
                    RETURN to_jsonb(masked::numeric);
                END IF;
                RETURN coalesce(to_jsonb(masked), 'null');
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

-- The PII tokens of a text, normalised so that every spelling of one value compares equal; a UPI
-- handle whose local part is a phone also yields that phone.
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_tokens(v text) RETURNS TABLE(kind text, token text)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH found AS (
        SELECT m[1] AS t, refresh_pipeline.pii_kind(m[1]) AS k
        FROM regexp_matches(v, '(' || refresh_pipeline.pii_pattern() || ')', 'g') AS m
    )
    SELECT k, CASE k WHEN 'phone' THEN right(regexp_replace(t, '[^0-9]', '', 'g'), 10) ELSE lower(t) END FROM found
    UNION ALL
    SELECT 'phone', right(regexp_replace(split_part(t, '@', 1), '[^0-9]', '', 'g'), 10)
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

CREATE OR REPLACE FUNCTION refresh_pipeline.luhn_valid(digits text) RETURNS boolean
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
    RETURN total % 10 = 0;
END $$;

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

-- Every PII-shaped token of a text, by detector, normalised: emails, UPI handles and Indian mobiles
-- (as pii_tokens), PAN numbers, Aadhaar numbers (Verhoeff-valid), card numbers (Luhn-valid, 13-19 digits).
CREATE OR REPLACE FUNCTION refresh_pipeline.pattern_findings(v text) RETURNS TABLE(detector text, token text)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT kind, token FROM refresh_pipeline.pii_tokens(v)
    UNION ALL
    SELECT 'pan', m[1]
    FROM regexp_matches(v, '(?<![A-Za-z0-9])([A-Z]{3}[ABCFGHLJPT][A-Z][0-9]{4}[A-Z])(?![A-Za-z0-9])', 'g') AS m
    UNION ALL
    SELECT 'aadhaar', digits FROM (
        SELECT regexp_replace(m[1], '[^0-9]', '', 'g') AS digits
        FROM regexp_matches(v, '(?<![0-9])([2-9][0-9]{3}[ -]?[0-9]{4}[ -]?[0-9]{4})(?![0-9])', 'g') AS m
    ) AS found WHERE refresh_pipeline.verhoeff_valid(digits)
    UNION ALL
    SELECT 'card', digits FROM (
        SELECT regexp_replace(m[1], '[^0-9]', '', 'g') AS digits
        FROM regexp_matches(v, '(?<![0-9])((?:[0-9][ -]?){12,18}[0-9])(?![0-9])', 'g') AS m
    ) AS found WHERE length(digits) BETWEEN 13 AND 19 AND refresh_pipeline.luhn_valid(digits)
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
