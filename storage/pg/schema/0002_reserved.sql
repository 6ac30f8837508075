-- Reserved for the storage helper's 0002 migration; this branch's stand-in, to be DELETED when merging.
SELECT 1;
