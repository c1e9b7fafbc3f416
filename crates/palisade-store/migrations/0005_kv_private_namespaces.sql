-- Private and shared key-value namespaces get disjoint storage names. Before, an extension's
-- own namespace was stored under the extension's name, the same name a shared namespace of
-- that name used: one storage, one data key, one policy resource. Now a private namespace is
-- stored as `ext:NAME` (names never hold a `:`) and a shared one as `NAME`.
--
-- The old rows do not say which they were. Rule: a namespace named like an extension of the
-- same tenant is that extension's own state (it was written through "self", or by another
-- extension reaching into it through the collision); every other namespace is shared. Such a
-- namespace's values, usage row and data keys move to `ext:NAME` / `kv:ext:NAME`.
--
-- Values are not re-encrypted here: each value's AAD names the namespace and each data key's
-- wrapping names its scope, so the names they were sealed under are kept, in
-- `kv_entries.sealed_namespace` and `data_keys.wrapped_scope` (NULL: the row's own). Rewriting
-- a value, re-encryption after a data-key rotation and a key-encryption-key rotation seal
-- under the new names and clear them.
ALTER TABLE kv_entries ADD COLUMN sealed_namespace TEXT;
ALTER TABLE data_keys ADD COLUMN wrapped_scope TEXT;

UPDATE kv_entries
    SET sealed_namespace = namespace, namespace = 'ext:' || namespace
    WHERE EXISTS (SELECT 1 FROM extensions x
                  WHERE x.tenant_id = kv_entries.tenant_id AND x.name = kv_entries.namespace);

UPDATE kv_namespace_usage
    SET namespace = 'ext:' || namespace
    WHERE EXISTS (SELECT 1 FROM extensions x
                  WHERE x.tenant_id = kv_namespace_usage.tenant_id
                    AND x.name = kv_namespace_usage.namespace);

UPDATE data_keys
    SET wrapped_scope = scope, scope = 'kv:ext:' || SUBSTR(scope, 4)
    WHERE EXISTS (SELECT 1 FROM extensions x
                  WHERE x.tenant_id = data_keys.tenant_id AND 'kv:' || x.name = data_keys.scope);
