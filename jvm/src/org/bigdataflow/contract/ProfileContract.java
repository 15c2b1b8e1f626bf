package org.bigdataflow.contract;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.apache.spark.sql.api.java.UDF1;

/**
 * The profile message contract (declared in jobs/contract.py, embedded in this jar as
 * contract.json), checked on the raw message bytes: null when the message keeps it,
 * otherwise the broken rules as "field: rule" (never a value: reasons are read by people
 * who must not see personal data).
 *
 * <p>Strict where Spark's JSON reader is lenient: valid UTF-8, one JSON object and nothing
 * after it, no duplicate keys, JSON types as declared (Spark turns any value into a string
 * column), whole-value pattern matches (Java's {@code $} matches before a final newline).
 */
public final class ProfileContract implements UDF1<byte[], String> {
  private static final long serialVersionUID = 1L;
  private static final int MAX_REPORTED = 4;
  private static final int MAX_NESTING = 16;
  // Strict ISO-8601 with a UTC offset, the shape Spark's timestamp cast reads the same way.
  private static final Pattern TIMESTAMP_SHAPE =
      Pattern.compile("\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:\\d{2})");
  private static final Contract CONTRACT = Contract.load();

  @Override
  public String call(byte[] message) {
    return CONTRACT.violations(message, Instant.now());
  }

  /** SHA-256 of the embedded contract.json: the job compares it with its own at start. */
  public static String digest() {
    return CONTRACT.digest;
  }

  private static final class Rule {
    final String field;
    final String[] path;
    final String kind;
    final boolean required;
    final Integer maxLength;
    final Pattern pattern;
    final Set<String> choices;
    final Long minimum;
    final Long maximum;
    final String notBefore;

    Rule(JsonNode node) {
      field = node.get("field").asText();
      path = field.split("\\.");
      kind = node.get("kind").asText();
      required = node.path("required").asBoolean(false);
      maxLength = node.has("max_length") ? node.get("max_length").asInt() : null;
      pattern = node.has("pattern") ? Pattern.compile(node.get("pattern").asText()) : null;
      if (node.has("choices")) {
        choices = new HashSet<>();
        node.get("choices").forEach(choice -> choices.add(choice.asText()));
      } else {
        choices = null;
      }
      minimum = node.has("minimum") ? node.get("minimum").asLong() : null;
      maximum = node.has("maximum") ? node.get("maximum").asLong() : null;
      notBefore = node.has("not_before") ? node.get("not_before").asText() : null;
    }
  }

  private static final class Contract {
    final List<Rule> rules = new ArrayList<>();
    final Map<String, Rule> byField = new LinkedHashMap<>();
    final long clockSkewSeconds;
    final String digest;
    final ObjectMapper mapper;

    Contract(byte[] json) throws IOException {
      JsonNode root = new ObjectMapper().readTree(json);
      for (JsonNode node : root.get("rules")) {
        Rule rule = new Rule(node);
        rules.add(rule);
        byField.put(rule.field, rule);
      }
      clockSkewSeconds = root.get("clock_skew_seconds").asLong();
      digest = sha256(json);
      JsonFactory factory =
          JsonFactory.builder()
              .streamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(MAX_NESTING).build())
              .build();
      factory.enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
      mapper = new ObjectMapper(factory);
      mapper.enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    }

    static Contract load() {
      try (InputStream in = ProfileContract.class.getResourceAsStream("contract.json")) {
        if (in == null) {
          throw new IllegalStateException("contract.json is missing from the jar");
        }
        return new Contract(in.readAllBytes());
      } catch (IOException e) {
        throw new IllegalStateException("contract.json cannot be read", e);
      }
    }

    String violations(byte[] message, Instant now) {
      if (message == null || message.length == 0) {
        return "message: empty";
      }
      try {
        StandardCharsets.UTF_8
            .newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT)
            .decode(ByteBuffer.wrap(message));
      } catch (CharacterCodingException e) {
        return "message: not valid UTF-8";
      }
      JsonNode root;
      try {
        root = mapper.readTree(message);
      } catch (JsonProcessingException e) {
        // The location only: Jackson's message quotes the offending text.
        return e.getLocation() == null
            ? "message: not valid JSON"
            : String.format(
                "message: not valid JSON (line %d, column %d)",
                e.getLocation().getLineNr(), e.getLocation().getColumnNr());
      } catch (IOException e) {
        return "message: not valid JSON";
      }
      if (root == null || !root.isObject()) {
        return "message: not a JSON object";
      }
      List<String> problems = new ArrayList<>();
      Set<String> objectsReported = new HashSet<>();
      Map<String, Instant> instants = new LinkedHashMap<>();
      for (Rule rule : rules) {
        String problem = check(rule, root, now, instants, objectsReported);
        if (problem != null) {
          problems.add(problem);
        }
      }
      if (problems.isEmpty()) {
        return null;
      }
      int more = problems.size() - MAX_REPORTED;
      String reason = String.join("; ", problems.subList(0, Math.min(problems.size(), MAX_REPORTED)));
      return more > 0 ? reason + "; and " + more + " more" : reason;
    }

    private String check(
        Rule rule, JsonNode root, Instant now, Map<String, Instant> instants, Set<String> objectsReported) {
      JsonNode node = root;
      StringBuilder walked = new StringBuilder();
      for (int i = 0; i < rule.path.length - 1; i++) {
        walked.append(i == 0 ? "" : ".").append(rule.path[i]);
        node = node.get(rule.path[i]);
        if (node == null || node.isNull()) {
          return rule.required ? rule.field + ": required" : null;
        }
        if (!node.isObject()) {
          String parent = walked.toString();
          return objectsReported.add(parent) ? parent + ": must be an object, not " + typeName(node) : null;
        }
      }
      JsonNode value = node.get(rule.path[rule.path.length - 1]);
      // The transformation reads "" as absent (id.name is often ""): so does the contract.
      if (value == null || value.isNull() || (value.isTextual() && value.textValue().isEmpty())) {
        return rule.required ? rule.field + ": required" : null;
      }
      switch (rule.kind) {
        case "text":
          return checkText(rule, value);
        case "integer":
          return checkInteger(rule, value);
        case "text_or_integer":
          return value.isIntegralNumber() ? checkLength(rule, value.asText()) : checkText(rule, value);
        case "timestamp":
          return checkTimestamp(rule, value, now, instants);
        default:
          throw new IllegalStateException("unknown rule kind " + rule.kind);
      }
    }

    private String checkText(Rule rule, JsonNode value) {
      if (!value.isTextual()) {
        return rule.field + ": must be text, not " + typeName(value);
      }
      String text = value.textValue();
      String problem = checkLength(rule, text);
      if (problem != null) {
        return problem;
      }
      for (int i = 0; i < text.length(); i++) {
        char c = text.charAt(i);
        if (Character.isISOControl(c)) {
          return rule.field + ": contains a control character";
        }
        if (Character.isSurrogate(c)) {
          boolean paired =
              Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1));
          if (!paired) {
            return rule.field + ": contains an unpaired surrogate (not Unicode text)";
          }
          i++;
        }
      }
      if (rule.choices != null && !rule.choices.contains(text)) {
        return rule.field + ": not one of the allowed values";
      }
      if (rule.pattern != null && !rule.pattern.matcher(text).matches()) {
        return rule.field + ": does not match the pattern " + rule.pattern.pattern();
      }
      return null;
    }

    private String checkLength(Rule rule, String text) {
      if (rule.maxLength != null && text.codePointCount(0, text.length()) > rule.maxLength) {
        return rule.field + ": longer than " + rule.maxLength + " characters";
      }
      return null;
    }

    private String checkInteger(Rule rule, JsonNode value) {
      if (!value.isIntegralNumber()) {
        return rule.field + ": must be an integer, not " + typeName(value);
      }
      if (!value.canConvertToLong()
          || (rule.minimum != null && value.longValue() < rule.minimum)
          || (rule.maximum != null && value.longValue() > rule.maximum)) {
        return rule.field + ": not between " + rule.minimum + " and " + rule.maximum;
      }
      return null;
    }

    private String checkTimestamp(Rule rule, JsonNode value, Instant now, Map<String, Instant> instants) {
      if (!value.isTextual()) {
        return rule.field + ": must be an ISO-8601 text timestamp, not " + typeName(value);
      }
      Instant instant;
      try {
        if (!TIMESTAMP_SHAPE.matcher(value.textValue()).matches()) {
          throw new DateTimeParseException("shape", value.textValue(), 0);
        }
        instant = OffsetDateTime.parse(value.textValue(), DateTimeFormatter.ISO_OFFSET_DATE_TIME).toInstant();
      } catch (DateTimeParseException e) {
        return rule.field + ": not an ISO-8601 timestamp with a UTC offset";
      }
      instants.put(rule.field, instant);
      if (instant.isAfter(now.plusSeconds(clockSkewSeconds))) {
        return rule.field + ": in the future";
      }
      if (rule.notBefore != null) {
        Instant earliest = byField.containsKey(rule.notBefore) ? instants.get(rule.notBefore) : Instant.parse(rule.notBefore);
        if (earliest != null && instant.isBefore(earliest)) {
          return rule.field + ": before " + rule.notBefore;
        }
      }
      return null;
    }
  }

  private static String typeName(JsonNode node) {
    switch (node.getNodeType()) {
      case ARRAY:
        return "an array";
      case OBJECT:
        return "an object";
      case BOOLEAN:
        return "a boolean";
      case NUMBER:
        return "a number";
      case STRING:
        return "text";
      default:
        return node.getNodeType().toString().toLowerCase();
    }
  }

  private static String sha256(byte[] bytes) {
    try {
      StringBuilder hex = new StringBuilder();
      for (byte b : MessageDigest.getInstance("SHA-256").digest(bytes)) {
        hex.append(String.format("%02x", b));
      }
      return hex.toString();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
