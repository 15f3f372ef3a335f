-- The shop's analyses as one distributed SQL job (DataFusion SQL, run by Ballista in
-- containers): `tarn job submit --wait --file examples/shop_analyses.sql`. The same
-- three results as examples/shop_analyses.py, written beside them under demo/sql/.
CREATE EXTERNAL TABLE events STORED AS PARQUET LOCATION 's3://my-bucket/events/';
CREATE EXTERNAL TABLE purchases STORED AS PARQUET LOCATION 's3://my-bucket/customer-data/';
CREATE EXTERNAL TABLE products STORED AS PARQUET LOCATION 's3://my-bucket/products/';
CREATE EXTERNAL TABLE customers STORED AS PARQUET LOCATION 's3://my-bucket/customers/';

-- Cart abandonment by day and category.
COPY (
  WITH carts AS (
    SELECT DISTINCT e.session_id, e.event_date, p.category
    FROM events e JOIN products p ON e.product_id = p.product_id
    WHERE e.event_type = 'add_to_cart'
  ), checkouts AS (
    SELECT DISTINCT session_id FROM events WHERE event_type = 'checkout'
  )
  SELECT c.event_date, c.category, count(*) AS carts,
         sum(CASE WHEN k.session_id IS NULL THEN 1 ELSE 0 END) AS abandoned,
         CAST(sum(CASE WHEN k.session_id IS NULL THEN 1 ELSE 0 END) AS DOUBLE) / count(*) AS abandonment_rate
  FROM carts c LEFT JOIN checkouts k ON c.session_id = k.session_id
  GROUP BY c.event_date, c.category
  ORDER BY c.event_date, c.category
) TO 's3://my-bucket/demo/sql/cart_abandonment/' STORED AS PARQUET;

-- Customer lifetime value.
COPY (
  SELECT v.customer_id, v.lifetime_value, v.orders, v.first_purchase, v.last_purchase,
         v.lifetime_value / v.orders AS avg_order_value, c.name, c.country, c.segment
  FROM (
    SELECT customer_id, sum(purchase_amount) AS lifetime_value, count(DISTINCT order_id) AS orders,
           min(purchase_date) AS first_purchase, max(purchase_date) AS last_purchase
    FROM purchases GROUP BY customer_id
  ) v JOIN customers c ON v.customer_id = c.customer_id
  ORDER BY v.lifetime_value DESC, v.customer_id
) TO 's3://my-bucket/demo/sql/customer_lifetime_value/' STORED AS PARQUET;

-- Bought X, also bought Y: the three products bought with each by the most customers.
COPY (
  SELECT product_id, also_bought_id, customers, recommendation_rank FROM (
    SELECT product_id, also_bought_id, customers,
           row_number() OVER (PARTITION BY product_id ORDER BY customers DESC, also_bought_id) AS recommendation_rank
    FROM (
      SELECT a.product_id, b.product_id AS also_bought_id, count(DISTINCT a.customer_id) AS customers
      FROM purchases a JOIN purchases b ON a.order_id = b.order_id AND a.product_id <> b.product_id
      GROUP BY a.product_id, b.product_id
    ) pairs
  ) ranked WHERE recommendation_rank <= 3
  ORDER BY product_id, recommendation_rank
) TO 's3://my-bucket/demo/sql/also_bought/' STORED AS PARQUET;
