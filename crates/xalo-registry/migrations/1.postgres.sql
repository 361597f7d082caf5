CREATE TABLE person (
    code TEXT PRIMARY KEY,
    family_name TEXT NOT NULL,
    middle_name TEXT NOT NULL,
    given_name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    gender TEXT NOT NULL,
    birth_place TEXT NOT NULL,
    nationality TEXT NOT NULL,
    residence_unit TEXT NOT NULL,
    residence_address TEXT NOT NULL,
    temporary_residence_unit TEXT,
    father TEXT,
    mother TEXT,
    spouse TEXT,
    alive BIGINT NOT NULL,
    death_date TEXT,
    name_key TEXT NOT NULL
);
CREATE INDEX person_name ON person (name_key, birth_date);
CREATE INDEX person_unit ON person (residence_unit);
CREATE INDEX person_father ON person (father);
CREATE INDEX person_mother ON person (mother);

CREATE TABLE enterprise (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    foreign_name TEXT,
    unit TEXT NOT NULL,
    address TEXT NOT NULL,
    legal_form TEXT NOT NULL,
    charter_capital BIGINT NOT NULL,
    business_lines TEXT NOT NULL,
    representative TEXT NOT NULL,
    founders TEXT NOT NULL,
    status TEXT NOT NULL,
    registered_on TEXT NOT NULL,
    name_key TEXT NOT NULL
);
CREATE INDEX enterprise_name_key ON enterprise (name_key);

-- Every change to either register, in order: the history and the event feed in one.
CREATE TABLE registry_change (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    register TEXT NOT NULL,
    subject TEXT NOT NULL,
    event TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    data TEXT NOT NULL,
    evidence TEXT NOT NULL,
    ledger_index BIGINT
);
CREATE INDEX registry_change_subject ON registry_change (subject);

-- Every read of personal data: who, for whom, why.
CREATE TABLE registry_access (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject TEXT NOT NULL,
    client TEXT NOT NULL,
    user_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    service TEXT NOT NULL,
    message_id TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX registry_access_subject ON registry_access (subject);
