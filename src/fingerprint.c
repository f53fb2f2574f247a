/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  Content fingerprints of events, compatible with Snowplow's.
 *
 * For an object, the top-level keys are sorted bytewise; each key not
 * excluded is hashed followed by the unit separator U+001F, then its value
 * followed by U+001F.  A string is hashed as its characters: for a flat
 * object of strings this is Snowplow's event fingerprint.  Any other value
 * is hashed as a NUL byte, a letter for its JSON type and its canonical
 * jsonb text (jsonb keeps one order of keys whatever the input order), so
 * that 1, "1", null and "null" differ; no jsonb string holds a NUL byte.  A
 * U+001F inside a key or a string is hashed as NUL followed by U+001F, so
 * no value can forge a separator (this is where we differ from Snowplow,
 * whose input would be ambiguous).  A value that is not an object is hashed
 * as its jsonb text form, which holds no bare U+001F.
 *
 * Every SQL face (fingerprint(), fingerprint_bytes(), the pipelines) calls
 * sessionize_fingerprint_jsonb().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/md5.h"
#include "common/sha2.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "sessionize.h"

#define UNIT_SEPARATOR '\x1f'

/* A top-level key and its value, as found in the jsonb container. */
typedef struct FingerprintPair
{
	char	   *key;
	int			key_length;
	JsonbValue	value;
} FingerprintPair;

PG_FUNCTION_INFO_V1(fingerprint_text);
PG_FUNCTION_INFO_V1(fingerprint_uuid);

static int
pair_compare(const void *a, const void *b)
{
	const FingerprintPair *x = a;
	const FingerprintPair *y = b;
	int			result = memcmp(x->key, y->key, Min(x->key_length, y->key_length));

	if (result != 0)
		return result;
	return (x->key_length > y->key_length) - (x->key_length < y->key_length);
}

static void
hash_update(pg_cryptohash_ctx *context, const char *data, size_t length)
{
	if (pg_cryptohash_update(context, (const uint8 *) data, length) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not update fingerprint hash: %s",
						pg_cryptohash_error(context))));
}

/* Appends a key or a string: its characters, a U+001F escaped by a NUL. */
static void
append_string(StringInfo buffer, const char *data, int length)
{
	const char *separator;

	while ((separator = memchr(data, UNIT_SEPARATOR, length)) != NULL)
	{
		int			before = separator - data;

		appendBinaryStringInfo(buffer, data, before);
		appendStringInfoChar(buffer, '\0');
		appendStringInfoChar(buffer, UNIT_SEPARATOR);
		data += before + 1;
		length -= before + 1;
	}
	appendBinaryStringInfo(buffer, data, length);
}

/*
 * Appends a value: a string as its characters, anything else as NUL, a
 * letter for its type and its jsonb text.
 */
static void
append_value(StringInfo buffer, JsonbValue *value)
{
	if (value->type == jbvString)
	{
		append_string(buffer, value->val.string.val, value->val.string.len);
		return;
	}
	appendStringInfoChar(buffer, '\0');
	switch (value->type)
	{
		case jbvNull:
			appendStringInfoChar(buffer, 'z');
			return;
		case jbvBool:
			appendStringInfoString(buffer, value->val.boolean ? "btrue" : "bfalse");
			return;
		case jbvNumeric:
			appendStringInfoChar(buffer, 'n');
			appendStringInfoString(buffer,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(value->val.numeric))));
			return;
		case jbvBinary:
			appendStringInfoChar(buffer, JsonContainerIsArray(value->val.binary.data) ? 'a' : 'o');
			JsonbToCString(buffer, value->val.binary.data, value->val.binary.len);
			return;
		default:
			elog(ERROR, "unexpected jsonb value type %d in fingerprint", (int) value->type);
	}
}

/* Sorts the few pairs of an event; insertion sort beats qsort at this size. */
static void
sort_pairs(FingerprintPair *pairs, int count)
{
	if (count > 32)
	{
		qsort(pairs, count, sizeof(FingerprintPair), pair_compare);
		return;
	}
	for (int i = 1; i < count; i++)
	{
		FingerprintPair pair = pairs[i];
		int			j = i;

		while (j > 0 && pair_compare(&pairs[j - 1], &pair) > 0)
		{
			pairs[j] = pairs[j - 1];
			j--;
		}
		pairs[j] = pair;
	}
}

static bool
is_excluded(const FingerprintPair *pair, const char **exclude, const int *exclude_lengths,
			int exclude_count)
{
	for (int i = 0; i < exclude_count; i++)
		if (exclude_lengths[i] == pair->key_length &&
			memcmp(exclude[i], pair->key, pair->key_length) == 0)
			return true;
	return false;
}

/*
 * Computes the fingerprint of "event" into digest (room for
 * SESSIONIZE_MAX_DIGEST_LENGTH bytes) and returns its length.  Keys listed
 * in exclude (with their byte lengths) are skipped at the top level.
 */
int
sessionize_fingerprint_jsonb(Jsonb *event, const char **exclude, const int *exclude_lengths,
							 int exclude_count, SessionizeHash algorithm, uint8 *digest)
{
	pg_cryptohash_ctx *context;
	int			digest_length;
	StringInfoData input;

	initStringInfo(&input);
	/* The whole input is built first: one hash update costs far less than forty. */
	if (JB_ROOT_IS_OBJECT(event))
	{
		int			capacity = JB_ROOT_COUNT(event);
		FingerprintPair *pairs = palloc(sizeof(FingerprintPair) * Max(capacity, 1));
		int			count = 0;
		JsonbIterator *iterator = JsonbIteratorInit(&event->root);
		JsonbIteratorToken token;
		JsonbValue	item;

		while ((token = JsonbIteratorNext(&iterator, &item, true)) != WJB_DONE)
		{
			if (token == WJB_KEY)
			{
				pairs[count].key = item.val.string.val;
				pairs[count].key_length = item.val.string.len;
			}
			else if (token == WJB_VALUE)
				pairs[count++].value = item;
		}
		sort_pairs(pairs, count);
		for (int i = 0; i < count; i++)
		{
			if (is_excluded(&pairs[i], exclude, exclude_lengths, exclude_count))
				continue;
			append_string(&input, pairs[i].key, pairs[i].key_length);
			appendStringInfoChar(&input, UNIT_SEPARATOR);
			append_value(&input, &pairs[i].value);
			appendStringInfoChar(&input, UNIT_SEPARATOR);
		}
	}
	else
		JsonbToCString(&input, &event->root, VARSIZE(event));

	if (algorithm == SESSIONIZE_HASH_SHA256)
	{
		context = pg_cryptohash_create(PG_SHA256);
		digest_length = PG_SHA256_DIGEST_LENGTH;
	}
	else
	{
		context = pg_cryptohash_create(PG_MD5);
		digest_length = MD5_DIGEST_LENGTH;
	}
	if (context == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory for a fingerprint hash")));

	PG_TRY();
	{
		if (pg_cryptohash_init(context) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize fingerprint hash: %s",
							pg_cryptohash_error(context))));
		hash_update(context, input.data, input.len);
#if PG_VERSION_NUM >= 150000
		if (pg_cryptohash_final(context, digest, digest_length) < 0)
#else
		if (pg_cryptohash_final(context, digest) < 0)
#endif
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not finish fingerprint hash: %s",
							pg_cryptohash_error(context))));
	}
	PG_FINALLY();
	{
		/* the hash context lives outside memory contexts (it may be OpenSSL's) */
		pg_cryptohash_free(context);
	}
	PG_END_TRY();

	return digest_length;
}

/* Reads the algorithm argument: 'md5' or 'sha256'. */
static SessionizeHash
algorithm_argument(FunctionCallInfo fcinfo, int argno)
{
	char	   *name;

	if (PG_NARGS() <= argno)
		return SESSIONIZE_HASH_MD5;
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("fingerprint algorithm must not be null"),
				 errhint("Use 'md5' or 'sha256'.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(name, "md5") == 0)
		return SESSIONIZE_HASH_MD5;
	if (strcmp(name, "sha256") == 0)
		return SESSIONIZE_HASH_SHA256;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown fingerprint algorithm \"%s\"", name),
			 errhint("Use 'md5' or 'sha256'.")));
	return SESSIONIZE_HASH_MD5;	/* keep the compiler quiet */
}

/*
 * Fingerprints the jsonb argument 0 with the exclude list in argument 1 (a
 * NULL list or NULL elements exclude nothing).
 */
static int
fingerprint_arguments(FunctionCallInfo fcinfo, SessionizeHash algorithm, uint8 *digest)
{
	Jsonb	   *event = PG_GETARG_JSONB_P(0);
	const char **exclude = NULL;
	int		   *exclude_lengths = NULL;
	int			exclude_count = 0;

	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
	{
		ArrayType  *array = PG_GETARG_ARRAYTYPE_P(1);
		Datum	   *elements;
		bool	   *nulls;
		int			count;

		deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elements, &nulls, &count);
		exclude = palloc(sizeof(char *) * Max(count, 1));
		exclude_lengths = palloc(sizeof(int) * Max(count, 1));
		for (int i = 0; i < count; i++)
		{
			if (nulls[i])
				continue;
			exclude[exclude_count] = VARDATA_ANY(DatumGetPointer(elements[i]));
			exclude_lengths[exclude_count] = VARSIZE_ANY_EXHDR(DatumGetPointer(elements[i]));
			exclude_count++;
		}
	}
	return sessionize_fingerprint_jsonb(event, exclude, exclude_lengths, exclude_count,
										algorithm, digest);
}

/* fingerprint(event jsonb, exclude text[], algorithm text) -> lowercase hex */
Datum
fingerprint_text(PG_FUNCTION_ARGS)
{
	uint8		digest[SESSIONIZE_MAX_DIGEST_LENGTH];
	char		hex[SESSIONIZE_MAX_DIGEST_LENGTH * 2 + 1];
	SessionizeHash algorithm = algorithm_argument(fcinfo, 2);
	int			length;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	length = fingerprint_arguments(fcinfo, algorithm, digest);
	hex_encode((const char *) digest, length, hex);
	hex[length * 2] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}

/* fingerprint_bytes(event jsonb, exclude text[]) -> the 16 MD5 bytes as uuid */
Datum
fingerprint_uuid(PG_FUNCTION_ARGS)
{
	uint8		digest[SESSIONIZE_MAX_DIGEST_LENGTH];
	pg_uuid_t  *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	fingerprint_arguments(fcinfo, SESSIONIZE_HASH_MD5, digest);
	result = palloc(sizeof(pg_uuid_t));
	memcpy(result->data, digest, UUID_LEN);
	PG_RETURN_UUID_P(result);
}
