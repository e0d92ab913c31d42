-- What the charger was told about the idTag that started the session
-- (Accepted, Blocked, ...): it charges whatever we answer, so a refused
-- start is billed or disputed with this at hand.
ALTER TABLE transactions ADD COLUMN id_tag_status text;
