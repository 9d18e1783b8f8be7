-- Records of one stream with since <= at < until, in time order (@order@: ASC or DESC).
SELECT at, key, payload FROM @schema@.journal
 WHERE stream = %(stream)s AND at >= %(since)s AND at < %(until)s
 ORDER BY at @order@, seq @order@
 LIMIT %(limit)s
