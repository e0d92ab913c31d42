-- OCPP 2.0.1 device models. A station reports its components and their
-- variables (NotifyReport, in parts), and commands get or set their
-- values (GetVariables, SetVariables). Current values live in Redis; here
-- is the catalogue of names all stations share and every value reported,
-- got or set, with what was said of it.

-- The components and variables any station has reported: names only
-- (what a variable is like, its unit and limits, is the station's own).
CREATE TABLE device_variables (
    component text NOT NULL,
    component_instance text NOT NULL,  -- '' when the component has none
    variable text NOT NULL,
    variable_instance text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, component_instance, variable, variable_instance)
);

-- Keyed by where the value came from (origin: "report:<requestId>:<generatedAt>:<seqNo>"
-- for a NotifyReport part, "command:<id>" for a command's result) and its
-- place there: a part sent again, or a result written twice, is one row.
CREATE TABLE variable_values (
    charge_point_id text NOT NULL,
    origin text NOT NULL,
    position integer NOT NULL,
    component text NOT NULL,
    component_instance text NOT NULL,
    evse_id integer,
    connector_id integer,
    variable text NOT NULL,
    variable_instance text NOT NULL,
    attribute_type text NOT NULL,  -- Actual, Target, MinSet, MaxSet
    value text,  -- none when the station reported the attribute without it (write-only)
    mutability text,
    characteristics json,  -- dataType, unit, limits, valuesList, as the station sent them
    source text NOT NULL,  -- NotifyReport, GetVariables, SetVariables
    reported_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_point_id, origin, position)
);
-- A station's variable over time (support: "when did this change?").
CREATE INDEX variable_values_by_variable
    ON variable_values (charge_point_id, component, variable, reported_at DESC);
