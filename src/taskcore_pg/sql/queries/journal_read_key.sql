-- Records of one key of one stream with since <= at < until (@order@: ASC or DESC).
SELECT at, key, payload FROM @schema@.journal
 WHERE stream = %(stream)s AND key = %(key)s AND at >= %(since)s AND at < %(until)s
 ORDER BY at @order@, seq @order@
 LIMIT %(limit)s
